"""`banked service`: generated systemd/launchd files, user edits kept, and socket activation for real."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from banked.daemon.cli import system_service
from banked.daemon.ipc.client import Client


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, banked_env: dict[str, str]) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    run = tmp_path / "xdg-run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    return tmp_path / "home"


def test_systemd_units_name_this_python_the_socket_and_the_settings(home: Path) -> None:
    done = system_service.install(start=False, platform="linux")
    unit_dir = home / ".config" / "systemd" / "user"
    assert done == [f"wrote {unit_dir / 'banked.socket'}", f"wrote {unit_dir / 'banked.service'}"]
    service = (unit_dir / "banked.service").read_text()
    sock = (unit_dir / "banked.socket").read_text()
    assert f"ExecStart={sys.executable} -m banked.daemon serve --log-file" in service
    assert "Requires=banked.socket" in service and "Restart=on-failure" in service
    assert f"Environment=BANKED_MODEL={os.environ['BANKED_MODEL']}" in service  # same model as the shell's
    assert f"ListenStream={os.environ['BANKED_RUNTIME_DIR']}/daemon.sock" in sock
    assert "SocketMode=0600" in sock
    if shutil.which("systemd-analyze"):
        r = subprocess.run(
            ["systemd-analyze", "--user", "verify", str(unit_dir / "banked.socket"), str(unit_dir / "banked.service")],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0 and "Unknown" not in r.stderr, r.stderr


def test_socket_path_under_the_runtime_dir_is_written_with_percent_t(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BANKED_RUNTIME_DIR")
    units = {f.path.name: f.content for f in system_service.systemd_units()}
    assert "ListenStream=%t/banked/daemon.sock" in units["banked.socket"]


def test_install_never_overwrites_a_user_edit_without_force(home: Path) -> None:
    system_service.install(start=False, platform="linux")
    unit = home / ".config" / "systemd" / "user" / "banked.service"
    assert system_service.install(start=False, platform="linux")[1] == f"unchanged {unit}"
    edited = unit.read_text().replace("RestartSec=2", "RestartSec=30")
    unit.write_text(edited)
    with pytest.raises(system_service.ServiceError, match="--force"):
        system_service.install(start=False, platform="linux")
    assert unit.read_text() == edited
    assert system_service.status(platform="linux")["files"][str(unit)] == "edited"  # type: ignore[index]
    system_service.install(force=True, start=False, platform="linux")
    assert "RestartSec=2\n" in unit.read_text()
    removed = system_service.uninstall(platform="linux")
    assert f"removed {unit}" in removed and not unit.exists()


def test_launchd_plist_is_valid_and_keeps_the_daemon_alive(home: Path) -> None:
    system_service.install(start=False, platform="darwin")
    plist = home / "Library" / "LaunchAgents" / "dev.banked.daemon.plist"
    data = plistlib.loads(plist.read_bytes())
    assert data["ProgramArguments"] == [sys.executable, "-m", "banked.daemon", "serve"]
    assert data["RunAtLoad"] is True and data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["StandardErrorPath"].endswith("daemon.log")
    assert not system_service.user_edited(plist.read_text())


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="systemd-socket-activate not installed")
def test_socket_activation_the_daemon_serves_the_socket_it_inherits(banked_env: dict[str, str], tmp_path: Path) -> None:
    sock = Path(banked_env["BANKED_RUNTIME_DIR"]) / "daemon.sock"
    sock.parent.mkdir(parents=True, mode=0o700)
    # systemd-socket-activate binds the socket and starts the daemon on the first connection, as systemd does.
    # It passes the daemon no environment but what -E names: every banked path goes explicitly, so the daemon
    # under test never finds the user's own daemon, socket, model or cache.
    passed = [arg for key, value in banked_env.items() for arg in ("-E", f"{key}={value}")]
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", str(sock), *passed, sys.executable, "-m", "banked.daemon", "serve"],
        env={**os.environ, **banked_env},
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "activate.log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with Client.connect(sock) as c:  # this connection starts the daemon
            c.sock.settimeout(60)
            assert c.call("ping")["pid"] == proc.pid  # systemd-socket-activate exec()s the daemon
            c.call("stop")
        proc.wait(60)
        assert sock.exists()  # the socket belongs to systemd: the daemon leaves it for the next start
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    stderr = (tmp_path / "activate.log").read_text()
    assert "socket activation: serving the socket systemd holds" in stderr


def test_install_that_cannot_load_the_units_says_so_and_fails(home: Path, tmp_path: Path) -> None:
    """Without a user bus `systemctl --user` fails: the units are written, and the command says they are not
    loaded (exit status 2), with what to run."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text("#!/bin/sh\necho 'Failed to connect to bus: No medium found' >&2\nexit 1\n")
    (fake / "systemctl").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    out = subprocess.run(
        [sys.executable, "-m", "banked.daemon", "service", "install"], env=env, capture_output=True, text=True
    )
    said = " ".join(out.stderr.split())
    assert out.returncode == 2
    assert "written but not loaded" in said and "systemctl --user daemon-reload" in said
    assert (home / ".config" / "systemd" / "user" / "banked.socket").exists()
    status = subprocess.run(
        [sys.executable, "-m", "banked.daemon", "service", "status"], env=env, capture_output=True, text=True
    )
    assert "the daemon is not running" in status.stdout
