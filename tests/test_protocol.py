"""The daemon's socket: bad clients get errors or a closed connection; the daemon keeps serving."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import pytest
from banked.daemon.ipc import rpc
from banked.daemon.ipc.client import Client
from helpers import DaemonProc, make_files, make_repo


def raw(d: DaemonProc) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(d.sock))
    s.settimeout(10)
    return s


def closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(1024) == b""
    except ConnectionResetError:
        return True


def assert_serves(d: DaemonProc) -> None:
    with d.client() as c:
        assert c.call("ping")["pid"] == d.proc.pid  # type: ignore[union-attr]


def test_socket_and_dir_are_private(daemon: DaemonProc) -> None:
    assert stat.S_IMODE(os.stat(daemon.sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(daemon.sock.parent).st_mode) == 0o700


def test_malformed_msgpack_closes_only_that_connection(daemon: DaemonProc) -> None:
    other = daemon.client()
    s = raw(daemon)
    s.sendall(b"\xc1\xc1\xc1 not msgpack")
    assert closed_by_peer(s)
    assert other.call("ping")["version"]
    assert_serves(daemon)


def test_not_an_rpc_array_closes_the_connection(daemon: DaemonProc) -> None:
    s = raw(daemon)
    s.sendall(msgpack.packb({"hello": "world"}))
    assert closed_by_peer(s)
    assert_serves(daemon)


def test_oversize_frame_closes_the_connection(daemon: DaemonProc) -> None:
    s = raw(daemon)
    header = b"\xdb" + (rpc.MAX_FRAME * 2).to_bytes(4, "big")  # str32 of 32 MiB
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        s.sendall(header + b"x" * (rpc.MAX_FRAME + 65536))
    assert closed_by_peer(s)
    assert_serves(daemon)


def test_unknown_method_and_wrong_params_get_errors(daemon: DaemonProc) -> None:
    with daemon.client() as c:
        with pytest.raises(rpc.RemoteError) as e:
            c.call("frobnicate", {})
        assert e.value.code == "unknown_method"
        with pytest.raises(rpc.RemoteError, match="missing parameter 'path'"):
            c.call("complete", {"line": 1, "col": 0})
        with pytest.raises(rpc.RemoteError, match="wrong type"):
            c.call("complete", {"path": "/x.py", "line": "one", "col": 0})
        with pytest.raises(rpc.RemoteError, match="params must be a map"):
            c.call("warm", [1, 2])
        assert c.call("ping")["pid"]


def test_client_vanishing_mid_stream_cancels_its_job(daemon: DaemonProc, tmp_path: Path) -> None:
    ws = make_files(tmp_path / "ws", {f"m{i}.py": f"def f{i}():\n    return {i}\n" * 200 for i in range(30)})
    s = raw(daemon)
    s.sendall(rpc.request(1, "warm", {"root": str(ws)}))
    s.recv(1024)  # a progress notification: the warm is under way
    s.close()
    with daemon.client() as c:
        deadline = time.monotonic() + 30
        while c.call("status")["pending_jobs"] and time.monotonic() < deadline:
            time.sleep(0.05)
        st = c.call("status")
        assert st["pending_jobs"] == 0
        # Cancelled part-way: the cache holds less than the whole workspace.
        assert st["cached_tokens"] < st["workspaces"][0]["tokens"]


def test_another_uid_is_refused(banked_env: dict[str, str]) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to act as another user")
    run = Path(tempfile.mkdtemp(prefix="banked-uid-", dir="/tmp"))
    os.chmod(run, 0o755)
    daemon = DaemonProc({**os.environ, **banked_env}, run / "sock" / "daemon.sock")
    daemon.env["BANKED_SOCKET"] = str(daemon.sock)
    daemon.start()
    # Open the directory and socket up, as a misconfiguration would; the uid check still refuses.
    os.chmod(daemon.sock.parent, 0o755)
    os.chmod(daemon.sock, 0o666)
    code = (
        "import os,socket,sys; os.setuid(65534); s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
        "s.settimeout(5)\ntry:\n s.sendall(bytes([0x94,0,1,0xa4])+b'ping'+bytes([0x80]))\n"
        " print('answered' if s.recv(100) else 'closed')\n"
        "except (ConnectionResetError, BrokenPipeError): print('closed')"  # closed before or after our write
    )
    out = subprocess.run([sys.executable, "-c", code, str(daemon.sock)], capture_output=True, text=True, timeout=30)
    try:
        assert out.stdout.strip() == "closed", out.stderr
        assert_serves(daemon)
        assert "refused a connection from uid 65534" in daemon.log()
    finally:
        daemon.stop()


def test_second_daemon_says_one_is_running(daemon: DaemonProc) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "banked.daemon", "serve"], env=daemon.env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert "already running" in out.stderr
    assert_serves(daemon)


def test_stale_socket_is_cleaned_up(banked_env: dict[str, str]) -> None:
    env = {**os.environ, **banked_env}
    sock = Path(banked_env["BANKED_RUNTIME_DIR"]) / "daemon.sock"
    sock.parent.mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))  # left behind by a crashed daemon: nobody listens
    s.close()
    d = DaemonProc(env, sock).start()
    try:
        assert_serves(d)
    finally:
        d.stop()


def test_concurrent_clients(daemon: DaemonProc, tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"a.py": "def a():\n    return 1\n", "b.py": "x = 1\n"})
    a, b = daemon.client(), daemon.client()
    ida = a.send_request("warm", {"root": str(ws)})
    idb = b.send_request("complete", {"path": str(ws / "b.py"), "line": 0, "col": 5, "max_tokens": 4})
    assert b.wait(idb)["generated_tokens"] <= 4
    assert a.wait(ida)["files"] == 2
    a.close()
    b.close()
    assert isinstance(Client, type)


def test_oversized_selection_is_a_clear_error(daemon: DaemonProc, tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"big.py": "x = 1\n" * 3000})
    with daemon.client() as c:
        with pytest.raises(rpc.RemoteError, match="select fewer lines"):
            c.call("explain", {"path": str(ws / "big.py")})
        assert c.call("ping")["pid"]


def test_a_socket_in_a_shared_directory_leaves_the_directory_alone(banked_env: dict[str, str]) -> None:
    """BANKED_SOCKET=/tmp-like/x.sock: the sticky, world-writable directory keeps its mode (it is not banked's)."""
    shared = Path(tempfile.mkdtemp(prefix="banked-shared-"))
    os.chmod(shared, 0o1777)
    env = {**os.environ, **banked_env, "BANKED_SOCKET": str(shared / "x.sock")}
    d = DaemonProc(env, shared / "x.sock").start()
    try:
        assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
        assert stat.S_IMODE(os.stat(shared / "x.sock").st_mode) == 0o600
        assert_serves(d)
    finally:
        d.stop()
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777


def test_a_socket_path_that_is_a_regular_file_is_never_deleted(banked_env: dict[str, str], tmp_path: Path) -> None:
    victim = tmp_path / "notes.txt"
    victim.write_text("precious\n")
    env = {**os.environ, **banked_env, "BANKED_SOCKET": str(victim)}
    out = subprocess.run(
        [sys.executable, "-m", "banked.daemon", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert "is not a socket" in " ".join(out.stderr.split())
    assert victim.read_text() == "precious\n"


def test_a_runtime_dir_of_another_user_is_refused(banked_env: dict[str, str], tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to make a directory another user owns")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    env = {**os.environ, **banked_env, "BANKED_RUNTIME_DIR": str(theirs)}
    out = subprocess.run(
        [sys.executable, "-m", "banked.daemon", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert "belongs to uid 65534" in " ".join(out.stderr.split())  # rich wraps long lines
    assert not (theirs / "daemon.sock").exists()


def test_malformed_keys_and_deep_frames_close_only_that_connection(daemon: DaemonProc) -> None:
    """Unhashable map keys, a cancel whose id is a list, and deeply nested frames: no traceback escapes."""
    for data in (
        msgpack.packb([2, "cancel", {"id": [1, 2]}]),
        b"\x94\x00\x01\xa4ping\x81\x91\x01\x01",  # {[1]: 1} as params: an unhashable key
        msgpack.packb([0, 1, "ping", {"x": [[[[[[[[[[1]]]]]]]]]]}]),
        b"\x91" * 100_000,
    ):
        s = raw(daemon)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        s.close()
    assert_serves(daemon)
    assert "Unhandled exception" not in daemon.log() and "Traceback" not in daemon.log()
