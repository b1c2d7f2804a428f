"""`banked doctor`: is everything in place, and if not, what to do. Neovim's `:checkhealth banked` reads it too.

Each check says ok, warn or error, what it found, and for anything not ok the
fix. Nothing here starts a daemon or loads a model.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from banked.daemon import __version__, config, paths
from banked.daemon.cli import system_service
from banked.daemon.engines import model_store
from banked.daemon.ipc import protocol
from banked.daemon.ipc.client import Client


@dataclass
class Check:
    name: str
    status: str  # ok | warn | error
    detail: str
    fix: str = ""


def lsp_executable() -> Path | None:
    """`banked-lsp`: beside this Python (the project's .venv, pipx), else on PATH."""
    here = Path(sys.executable).parent / "banked-lsp"
    if here.exists():
        return here
    found = shutil.which("banked-lsp")
    return Path(found) if found else None


def check_lsp() -> Check:
    exe = lsp_executable()
    if exe is None:
        return Check("language server", "error", "banked-lsp not found", "run `make install` (it goes into .venv/bin)")
    try:
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30)
        version = out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("language server", "error", f"{exe} does not run: {exc}", "reinstall with `make install`")
    if version != __version__:
        return Check("language server", "warn", f"{exe} is version {version}, banked is {__version__}", "reinstall")
    return Check("language server", "ok", f"{exe} {version}")


def check_config() -> tuple[Check, config.Config | None]:
    try:
        cfg = config.load()
    except config.ConfigError as exc:
        return Check("config", "error", str(exc), f"fix or delete {paths.config_file()}"), None
    where = paths.config_file()
    return Check("config", "ok", f"{where}" if where.exists() else f"defaults ({where} does not exist)"), cfg


def check_model(cfg: config.Config) -> Check:
    from banked.daemon.engines import EngineError, choose

    try:
        engine, model = choose(cfg)
    except EngineError as exc:
        return Check("engine and model", "error", str(exc), "set `engine` and `model` in config.toml")
    if isinstance(model, model_store.Packaged):
        what = f"{engine}, {model.name}" + (" (the embedded default)" if model is model_store.DEFAULT else "")
        if model_store.is_ready(model):
            return Check("engine and model", "ok", f"{what}, {model_store.model_path(model)}")
        try:
            model_store.part_files(model)
        except model_store.ModelError as exc:
            return Check("engine and model", "error", str(exc), model.install)
        return Check("engine and model", "ok", f"{what} (assembled on first use, {model.size / 1e9:.1f} GB)")
    if not model.exists():
        return Check("engine and model", "error", f"{model} does not exist", "fix `model` in config.toml")
    return Check("engine and model", "ok", f"{engine}, {model}")


def check_remote(cfg: config.Config, st: protocol.StatusResult | None) -> Check:
    """engine = "remote": the server's address and key as configured, whether it answers, and (from a running
    daemon) what it is, and how much of the last requests' prompts its cache served."""
    from banked.daemon.engines import servers
    from banked.daemon.engines.base import EngineError
    from banked.daemon.engines.remote import read_api_key, user_key

    try:
        key = read_api_key(cfg.remote_api_key_env, cfg.remote_api_key_file)
        server = servers.connect(
            cfg.remote_url, cfg.remote_kind, key, cfg.remote_model, user_key(), cfg.remote_insecure
        )
        info = server.info()
        server.close()
    except (EngineError, servers.ServerError) as exc:
        fix = "start the server (`banked team-server` on the team's machine) or fix remote_url / the API key"
        return Check("remote server", "error", str(exc), fix)
    detail = f"{cfg.remote_url}: {info.kind} serving {info.model}, {info.n_ctx:,} tokens of context, {info.slots} slots"
    remote = st.engine.extra.get("remote") if st is not None else None
    if isinstance(remote, dict):
        share = remote.get("recent_reuse")
        if share is not None:
            n = remote["recent_requests"]
            detail += f"; the last {n} requests took {100 * share:.1f} % of their prompt from its cache"
        if remote.get("problem"):
            return Check("remote server", "warn", f"{detail}; answering locally: {remote['problem']}", "see the log")
    return Check("remote server", "ok", detail)


def check_daemon() -> tuple[Check, protocol.StatusResult | None]:
    sock = paths.socket_path()
    try:
        with Client.connect(sock) as c:
            c.sock.settimeout(10)
            st = c.request(protocol.STATUS)
    except (OSError, ValueError):
        return Check("daemon", "ok", f"not running (any banked command or the editor starts one on {sock})"), None
    active = next((w for w in st.workspaces if w.active), None)
    where = f"; holds {active.root} ({st.cached_tokens:,} tokens)" if active else ""
    return Check("daemon", "ok", f"pid {st.pid}, {st.engine.name} with {st.engine.model}{where}"), st


def check_socket_dir() -> Check:
    d = paths.socket_path().parent
    if not d.exists():
        return Check("socket directory", "ok", f"{d} (made when a daemon starts)")
    st = os.stat(d)
    if st.st_uid != os.getuid():
        return Check("socket directory", "error", f"{d} belongs to uid {st.st_uid}", "set BANKED_RUNTIME_DIR")
    mode = stat.S_IMODE(st.st_mode)
    if d == paths.runtime_dir() and mode != 0o700:
        return Check("socket directory", "warn", f"{d} is {mode:o}", f"chmod 700 {d} (a daemon does it at start)")
    return Check("socket directory", "ok", f"{d}")


def check_service() -> Check:
    try:
        st = system_service.status()
    except system_service.ServiceError as exc:
        return Check("background service", "ok", str(exc))
    files = dict(st["files"])  # type: ignore[call-overload]
    if all(v == "missing" for v in files.values()):
        return Check("background service", "ok", "not installed (optional: `banked service install`)")
    if any(v == "outdated" for v in files.values()):
        return Check("background service", "warn", "unit files are outdated", "run `banked service install`")
    running = st.get("running")
    return Check("background service", "ok", f"installed; {'running' if running else 'not running now'}")


def check_watches() -> Check:
    try:
        limit = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    except (OSError, ValueError):
        return Check("file watches", "ok", "no inotify here (watchdog is used)")
    if limit < 8192:
        return Check("file watches", "warn", f"fs.inotify.max_user_watches is {limit}", "raise it with sysctl")
    return Check("file watches", "ok", f"fs.inotify.max_user_watches is {limit}")


def check_disk() -> Check:
    d = paths.cache_dir()
    probe = d if d.exists() else Path.home()
    free = shutil.disk_usage(probe).free
    snaps = paths.snapshots_dir()
    used = sum(f.stat().st_size for f in snaps.rglob("*") if f.is_file()) if snaps.exists() else 0
    detail = f"{free / 2**30:.1f} GiB free in {probe}; snapshots use {used / 2**20:.0f} MiB"
    if free < 2 * 2**30:
        return Check("disk", "warn", detail, f"free some space, or delete {snaps} (banked then starts cold)")
    return Check("disk", "ok", detail)


def run() -> list[Check]:
    checks = [Check("banked", "ok", f"{__version__} (Python {sys.version.split()[0]}, {sys.executable})"), check_lsp()]
    cfg_check, cfg = check_config()
    checks.append(cfg_check)
    if cfg is not None:
        checks.append(check_model(cfg))
    daemon, st = check_daemon()
    checks.append(daemon)
    if cfg is not None and cfg.engine == "remote":
        checks.append(check_remote(cfg, st))
    checks += [check_socket_dir(), check_service(), check_watches(), check_disk()]
    return checks


def as_json(checks: list[Check]) -> list[dict[str, Any]]:
    return [asdict(c) for c in checks]
