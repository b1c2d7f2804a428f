"""`banked service install | uninstall | status`: the daemon as a per-user background service.

systemd (Linux): a user socket unit plus a service unit. The socket unit owns the
daemon's socket, so the first editor to connect starts the daemon (socket
activation: `server.serve` adopts the inherited listening socket). launchd
(macOS): a LaunchAgent that keeps the daemon running from login.

Generated files carry a marker line with the hash of their own content; a file
whose content no longer matches its marker was edited by the user and is never
overwritten without `--force`.
"""

from __future__ import annotations

import hashlib
import os
import plistlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from banked.daemon import __version__, paths

SERVICE = "banked.service"
SOCKET = "banked.socket"
LAUNCHD_LABEL = "dev.banked.daemon"
_MARK = "banked-generated sha256="


class ServiceError(RuntimeError):
    """Installing or removing the service failed; the message says what to do."""


@dataclass(frozen=True)
class UnitFile:
    path: Path
    content: str


def systemd_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def launchd_dir() -> Path:
    return Path.home() / "Library" / "LaunchAgents"


def daemon_command() -> list[str]:
    return [sys.executable, "-m", "banked.daemon", "serve"]


def _systemd_socket_path(sock: Path) -> str:
    """The socket path as systemd should write it: `%t` (XDG_RUNTIME_DIR) where it lies under it."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and sock.is_relative_to(runtime):
        return "%t/" + str(sock.relative_to(runtime))
    return str(sock)


def _forwarded_env() -> dict[str, str]:
    """banked's own settings from the installing shell, so the service uses the same dirs and model."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("BANKED_")}


def _stamp(body: str, open_: str, close: str = "", at: int = 0) -> str:
    """`body` with a marker line (a comment holding the body's hash) inserted as line `at`."""
    digest = hashlib.sha256(body.encode()).hexdigest()
    mark = f"{open_} {_MARK}{digest} (banked {__version__}; `install` never overwrites your edits){close}\n"
    lines = body.splitlines(keepends=True)
    return "".join([*lines[:at], mark, *lines[at:]])


def user_edited(text: str) -> bool:
    """True if a file banked wrote was changed since, or was not written by banked at all."""
    lines = text.splitlines(keepends=True)
    marks = [i for i, ln in enumerate(lines[:3]) if _MARK in ln]
    if not marks:
        return True
    mark = lines.pop(marks[0])
    digest = mark.split(_MARK, 1)[1].split()[0]
    return hashlib.sha256("".join(lines).encode()).hexdigest() != digest


def systemd_units() -> list[UnitFile]:
    sock = paths.socket_path()
    exec_start = " ".join(_quote(a) for a in [*daemon_command(), "--log-file"])
    env_lines = "".join(f"Environment={_quote(f'{k}={v}')}\n" for k, v in _forwarded_env().items())
    socket_unit = (
        "[Unit]\n"
        "Description=banked daemon socket (starts the daemon on first use)\n"
        "\n"
        "[Socket]\n"
        f"ListenStream={_systemd_socket_path(sock)}\n"
        "SocketMode=0600\n"
        "DirectoryMode=0700\n"
        "\n"
        "[Install]\n"
        "WantedBy=sockets.target\n"
    )
    service_unit = (
        "[Unit]\n"
        "Description=banked: local code model with the whole workspace warm in its KV cache\n"
        f"Requires={SOCKET}\n"
        f"After={SOCKET}\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        f"{env_lines}"
        "Environment=PYTHONUNBUFFERED=1\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "TimeoutStopSec=120\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )
    d = systemd_dir()
    return [UnitFile(d / SOCKET, _stamp(socket_unit, "#")), UnitFile(d / SERVICE, _stamp(service_unit, "#"))]


def launchd_plist() -> UnitFile:
    log = paths.log_dir() / "daemon.log"
    body = plistlib.dumps(
        {
            "Label": LAUNCHD_LABEL,
            "ProgramArguments": daemon_command(),
            "EnvironmentVariables": {**_forwarded_env(), "PYTHONUNBUFFERED": "1"},
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "StandardOutPath": str(log),
            "StandardErrorPath": str(log),
            "ProcessType": "Background",
        }
    ).decode()
    # XML allows comments only after its declaration: the marker is the plist's second line.
    return UnitFile(launchd_dir() / f"{LAUNCHD_LABEL}.plist", _stamp(body, "<!--", " -->", at=1))


def _quote(arg: str) -> str:
    if not arg or any(c in arg for c in ' \t"\\$%;'):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'
    return arg


def platform_files(platform: str | None = None) -> list[UnitFile]:
    platform = platform or sys.platform
    if platform == "darwin":
        return [launchd_plist()]
    if platform.startswith("linux"):
        return systemd_units()
    raise ServiceError(f"no background service support on {platform}; run `banked serve` from your login instead")


def _systemctl(*args: str) -> subprocess.CompletedProcess[str] | None:
    if not shutil.which("systemctl"):
        return None
    return subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True, timeout=60)


class NotLoaded(ServiceError):
    """The unit files are written, but the service manager did not load them; the message says what to run."""


def install(force: bool = False, start: bool = True, platform: str | None = None) -> list[str]:
    """Write the unit files (refusing to overwrite user edits) and enable them; returns what was done.

    Raises NotLoaded (after writing) when systemd could not be asked to load them."""
    files = platform_files(platform)
    done: list[str] = []
    for f in files:
        if f.path.exists():
            current = f.path.read_text(errors="replace")
            if current == f.content:
                done.append(f"unchanged {f.path}")
                continue
            if user_edited(current) and not force:
                raise ServiceError(f"{f.path} was edited by hand; keep it, or run `banked service install --force`")
        f.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.path.with_suffix(f.path.suffix + ".tmp")
        tmp.write_text(f.content)
        os.replace(tmp, f.path)
        done.append(f"wrote {f.path}")
    if not start:
        return done
    if (platform or sys.platform) == "darwin":
        subprocess.run(["launchctl", "load", "-w", str(files[0].path)], check=False)
        done.append(f"loaded {LAUNCHD_LABEL}")
        return done
    steps = [("daemon-reload",), ("enable", "--now", SOCKET)]
    for step in steps:
        r = _systemctl(*step)
        if r is None or r.returncode != 0:
            why = "systemctl not found" if r is None else (r.stderr.strip() or f"exit {r.returncode}")
            raise NotLoaded(
                "\n".join(done) + f"\nthe units are written but not loaded: `systemctl --user {' '.join(step)}` "
                f"failed ({why}); in your login session run: systemctl --user daemon-reload && "
                f"systemctl --user enable --now {SOCKET}"
            )
        done.append(f"systemctl --user {' '.join(step)}")
    return done


def uninstall(platform: str | None = None) -> list[str]:
    files = platform_files(platform)
    done: list[str] = []
    if (platform or sys.platform) == "darwin":
        if files[0].path.exists():
            subprocess.run(["launchctl", "unload", "-w", str(files[0].path)], check=False)
    else:
        r = _systemctl("disable", "--now", SOCKET, SERVICE)
        if r is not None and r.returncode == 0:
            done.append(f"systemctl --user disable --now {SOCKET} {SERVICE}")
    for f in files:
        if f.path.exists():
            f.path.unlink()
            done.append(f"removed {f.path}")
    if (platform or sys.platform) != "darwin":
        _systemctl("daemon-reload")
    return done


def status(platform: str | None = None) -> dict[str, object]:
    files = platform_files(platform)
    out: dict[str, object] = {
        "files": {
            str(f.path): (
                "missing"
                if not f.path.exists()
                else "current"
                if f.path.read_text(errors="replace") == f.content
                else "edited"
                if user_edited(f.path.read_text(errors="replace"))
                else "outdated"
            )
            for f in files
        }
    }
    if (platform or sys.platform) != "darwin":
        r = _systemctl("is-active", SOCKET, SERVICE)
        if r is not None:
            out["active"] = dict(zip([SOCKET, SERVICE], r.stdout.split(), strict=False))
    out["running"] = daemon_answers()
    return out


def daemon_answers() -> bool:
    """Whether a daemon answers on the socket now (however it was started)."""
    from banked.daemon.ipc.client import daemon_alive

    return daemon_alive()
