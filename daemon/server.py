"""The daemon's transport: msgpack-RPC over a private Unix socket, served by asyncio.

One bad client never hurts another: a malformed or oversized frame closes that
connection only, an unknown method gets an error response, a client that
vanishes mid-stream has its jobs cancelled. Peers of another uid are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import struct
from pathlib import Path
from typing import IO, Any

import msgpack

from . import paths, rpc
from .engines.base import EngineError
from .service import Call, Daemon, UserError

log = logging.getLogger(__name__)


class AlreadyRunning(RuntimeError):
    pass


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class Connection:
    def __init__(self, daemon: Daemon, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.d = daemon
        self.reader = reader
        self.writer = writer
        self.calls: dict[int, Call] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def send(self, data: bytes) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(data)

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send(rpc.notification(method, params))

    async def serve(self) -> None:
        unpacker = rpc.unpacker()
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                try:
                    unpacker.feed(data)
                    for obj in unpacker:
                        self.dispatch(rpc.parse(obj))
                except msgpack.BufferFull:
                    log.warning("closing a connection: frame larger than %d bytes", rpc.MAX_FRAME)
                    break
                except (rpc.ProtocolError, msgpack.UnpackException, ValueError) as exc:
                    log.warning("closing a connection: malformed frame (%s)", exc)
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed = True
            for call in self.calls.values():
                call.cancel()
            with contextlib.suppress(Exception):
                self.writer.close()

    def dispatch(self, msg: rpc.Message) -> None:
        if msg.kind == rpc.NOTIFICATION:
            if msg.method == "cancel" and isinstance(msg.params, dict):
                call = self.calls.get(msg.params.get("id", -1))
                if call:
                    call.cancel()
            elif msg.method == "overlay":
                self.spawn(self.run(Call(-1, self.notify), "overlay", msg.params, reply=False))
            return
        if msg.kind == rpc.REQUEST:
            assert msg.id is not None and msg.method is not None
            call = Call(msg.id, self.notify)
            self.calls[msg.id] = call
            self.spawn(self.run(call, msg.method, msg.params))

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, call: Call, method: str, params: Any, reply: bool = True) -> None:
        handler = self.d.methods().get(method)
        error: dict[str, str] | None = None
        result: Any = None
        try:
            if method == "stop":
                result = {"stopping": True}
                asyncio.get_running_loop().call_later(0.05, self.d_stop)
            elif handler is None:
                error = {"code": "unknown_method", "message": f"unknown method {method!r}"}
            else:
                result = await handler(call, params)
        except UserError as exc:
            error = {"code": exc.code, "message": str(exc)}
        except EngineError as exc:
            error = {"code": "engine", "message": str(exc)}
        except Exception as exc:  # a bug in one request must not take the daemon down
            log.exception("%s failed", method)
            error = {"code": "internal", "message": f"{type(exc).__name__}: {exc}; see the daemon log"}
        finally:
            self.calls.pop(call.id, None)
        if reply:
            self.send(rpc.response(call.id, error, result))
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    def d_stop(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


def acquire_lock(sock_path: Path) -> IO[str]:
    """Hold an exclusive lock for the daemon's lifetime: a second daemon is refused."""
    lock = open(paths.lock_file(sock_path), "a+")  # noqa: SIM115 (held until exit)
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        lock.seek(0)
        pid = lock.read().strip() or "?"
        raise AlreadyRunning(f"a banked daemon is already running (pid {pid}) on {sock_path}") from exc
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


SD_LISTEN_FDS_START = 3


def inherited_socket() -> socket.socket | None:
    """The listening socket systemd passed us (socket activation, `sd_listen_fds`), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)  # not for our children
    if count < 1:
        return None
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise RuntimeError("the inherited socket is not a Unix stream socket; check ListenStream= in banked.socket")
    sock.setblocking(False)
    return sock


async def serve(daemon: Daemon, sock_path: Path | None = None) -> None:
    sock_path = sock_path or paths.socket_path()
    paths.private_dir(sock_path.parent)
    lock = acquire_lock(sock_path)
    inherited = inherited_socket()
    if inherited is not None:
        sock_path = Path(inherited.getsockname())
        log.info("socket activation: serving the socket systemd holds (%s)", sock_path)
    elif sock_path.exists() or sock_path.is_symlink():
        log.info("removing the stale socket %s", sock_path)
        sock_path.unlink()
    my_uid = os.getuid()
    conns: set[Connection] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock)
        if uid != my_uid:
            log.warning("refused a connection from uid %d", uid)
            writer.close()
            return
        conn = Connection(daemon, reader, writer)
        conns.add(conn)
        try:
            await conn.serve()
        finally:
            conns.discard(conn)

    if inherited is not None:
        server = await asyncio.start_unix_server(on_client, sock=inherited, limit=rpc.MAX_FRAME)
    else:
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(on_client, path=str(sock_path), limit=rpc.MAX_FRAME)
        finally:
            os.umask(old_umask)
        os.chmod(sock_path, 0o600)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    log.info(
        "banked daemon %d serving on %s (%s, %s)",
        os.getpid(),
        sock_path,
        daemon.engine.info.name,
        daemon.engine.info.model,
    )
    try:
        async with server:
            await stop.wait()
    finally:
        log.info("shutting down")
        server.close()
        for c in list(conns):
            c.writer.close()
        await daemon.shutdown()
        if inherited is None:  # systemd's socket stays: the next connection starts a daemon again
            with contextlib.suppress(FileNotFoundError):
                sock_path.unlink()
        lock.close()
