"""A blocking client of the daemon (the CLI's; tests use it too), auto-starting it like dmypy."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from banked.daemon import paths
from banked.daemon.ipc import protocol, rpc
from banked.daemon.ipc.protocol import P, R

OnNotify = Callable[[str, Any], None]


class DaemonUnavailable(RuntimeError):
    pass


class Client:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._ids = itertools.count(1)
        self._unpacker = rpc.unpacker()
        self._backlog: list[rpc.Message] = []

    @classmethod
    def connect(cls, path: Path | None = None) -> Client:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path or paths.socket_path()))
        except OSError:
            s.close()
            raise
        return cls(s)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def notify(self, method: str, params: Any) -> None:
        self.sock.sendall(rpc.notification(method, params))

    def send_request(self, method: str, params: Any) -> int:
        msgid = next(self._ids)
        self.sock.sendall(rpc.request(msgid, method, params))
        return msgid

    def _next(self) -> rpc.Message:
        while True:
            for obj in self._unpacker:
                return rpc.parse(obj)
            data = self.sock.recv(65536)
            if not data:
                raise DaemonUnavailable("the daemon closed the connection (see `banked status` and its log)")
            self._unpacker.feed(data)

    def wait(self, msgid: int, on_notify: OnNotify | None = None) -> Any:
        while True:
            msg = self._next()
            if msg.kind == rpc.RESPONSE and msg.id == msgid:
                if msg.error:
                    raise rpc.RemoteError.from_response(msg.error)
                return msg.result
            if msg.kind == rpc.NOTIFICATION and on_notify is not None:
                on_notify(msg.method or "", msg.params)

    def request(self, method: protocol.Method[P, R], params: P | None = None, on_notify: OnNotify | None = None) -> R:
        """A typed request: params and result are the method's structures (protocol.py)."""
        raw = self.call(method.name, protocol.encode(params) if params is not None else {}, on_notify)
        return method.decode_result(raw)

    def call(self, method: str, params: Any = None, on_notify: OnNotify | None = None) -> Any:
        """An untyped request, as plain values (tests and tools that speak the wire directly)."""
        msgid = self.send_request(method, params if params is not None else {})
        try:
            return self.wait(msgid, on_notify)
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):
                self.notify(protocol.CANCEL, {"id": msgid})
            raise


def daemon_alive(sock: Path | None = None) -> bool:
    """True while a daemon holds its lock: serving, or still writing its snapshot on the way out."""
    try:
        with paths.lock_file(sock).open("a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


def wait_for_exit(timeout: float = 120.0, sock: Path | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while daemon_alive(sock):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def start_daemon(sock: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `banked serve` detached from this terminal, serving `sock` (default: the usual socket); its
    output goes to the log dir."""
    log_file = paths.private_file(paths.log_dir() / "daemon.log")
    env = os.environ.copy()
    if sock is not None:
        env["BANKED_SOCKET"] = str(sock)
    with log_file.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "banked.daemon", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env=env,
        )


def connect(autostart: bool = True, timeout: float = 180.0, sock: Path | None = None) -> Client:
    """A client of the daemon on `sock` (default: the usual socket), starting one when none runs (unless
    told not to)."""
    try:
        return Client.connect(sock)
    except (FileNotFoundError, ConnectionRefusedError):
        if not autostart:
            raise DaemonUnavailable(
                "no banked daemon is running; any banked command starts one (`banked warm DIR`), "
                "or install the background service with `banked service install`"
            ) from None
    if not wait_for_exit(timeout, sock):  # one is shutting down: let it finish, then start afresh
        raise DaemonUnavailable(f"a banked daemon is stuck shutting down; see {paths.log_dir()}")
    proc = start_daemon(sock)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return Client.connect(sock)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        if proc.poll() is not None:
            # Lost a race with another starter? Then its daemon is the one to use.
            with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
                time.sleep(0.5)
                return Client.connect(sock)
            log = paths.log_dir() / "daemon.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise DaemonUnavailable(f"the daemon exited with status {proc.returncode}:\n{tail}")
        time.sleep(0.1)
    raise DaemonUnavailable(f"the daemon did not start within {timeout:.0f}s; see {paths.log_dir()}")
