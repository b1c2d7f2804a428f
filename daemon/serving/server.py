"""The daemon's transport: msgpack-RPC over a private Unix socket, served by asyncio.

One bad client never hurts another: a malformed or oversized frame closes that
connection only, an unknown method gets an error response, a client that
vanishes mid-stream has its jobs cancelled. Peers of another uid are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import signal
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import msgpack
from banked.daemon import paths
from banked.daemon.engines.base import EngineError
from banked.daemon.ipc import protocol, rpc
from banked.daemon.serving.call import Call, UserError
from banked.daemon.serving.service import Daemon
from msgspec import Struct

log = logging.getLogger(__name__)


class AlreadyRunning(RuntimeError):
    pass


class UnknownMethod(LookupError):
    pass


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class BufferBudget:
    """Bytes buffered in unfinished frames, across all connections: many slow senders of big frames must
    not exhaust memory any more than one can (each is also capped at rpc.MAX_FRAME)."""

    def __init__(self, limit: int = 4 * rpc.MAX_FRAME):
        self.limit = limit
        self.used = 0


_conn_ids = itertools.count(1)


class Connection:
    def __init__(
        self,
        daemon: Daemon,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        budget: BufferBudget | None = None,
    ):
        self.d = daemon
        self.reader = reader
        self.writer = writer
        self.budget = budget or BufferBudget()
        self.calls: dict[int, Call] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self.id = next(_conn_ids)

    def send(self, data: bytes) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(data)

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send(rpc.notification(method, params))

    async def serve(self) -> None:
        unpacker = rpc.unpacker()
        fed = 0
        held = 0  # this connection's share of the budget: bytes fed but not yet unpacked
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                try:
                    unpacker.feed(data)
                    fed += len(data)
                    for obj in unpacker:
                        self.dispatch(rpc.parse(obj))
                except msgpack.BufferFull:
                    log.warning("closing a connection: frame larger than %d bytes", rpc.MAX_FRAME)
                    break
                except (rpc.ProtocolError, msgpack.UnpackException, ValueError, TypeError, RecursionError) as exc:
                    log.warning("closing a connection: malformed frame (%s)", rpc.describe(exc))
                    break
                pending = fed - unpacker.tell()
                self.budget.used += pending - held
                held = pending
                if pending and self.budget.used > self.budget.limit:
                    log.warning("closing a connection: %d bytes buffered across all clients", self.budget.used)
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.budget.used -= held
            self.closed = True
            for call in self.calls.values():
                call.cancel()
            self.d.connection_closed(self.id)
            with contextlib.suppress(Exception):
                self.writer.close()

    def dispatch(self, msg: rpc.Message) -> None:
        if msg.kind == rpc.NOTIFICATION:
            if msg.method == protocol.CANCEL and isinstance(msg.params, dict):
                target = msg.params.get("id")
                call = self.calls.get(target) if isinstance(target, int) else None
                if call:
                    call.cancel()
            elif msg.method in (protocol.OVERLAY, protocol.ACTIVE):
                self.spawn(self.run(Call(-1, self.notify, self.id), msg.method, msg.params, reply=False))
            return
        if msg.kind == rpc.REQUEST:
            assert msg.id is not None and msg.method is not None
            call = Call(msg.id, self.notify, self.id)
            self.calls[msg.id] = call
            self.spawn(self.run(call, msg.method, msg.params))

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, call: Call, method: str, params: Any, reply: bool = True) -> None:
        error: dict[str, str] | None = None
        result: Any = None
        try:
            result = protocol.encode(await self.handle(call, method, params))
        except (UserError, protocol.BadParams) as exc:
            error = {"code": "bad_request", "message": str(exc)}
        except UnknownMethod as exc:
            error = {"code": "unknown_method", "message": str(exc)}
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

    async def handle(self, call: Call, method: str, raw: Any) -> Struct:
        """Validate the params into the method's structure, then run the daemon's coroutine of that name."""
        m = protocol.METHODS.get(method)
        if m is None:
            raise UnknownMethod(f"unknown method {method!r}")
        params = m.decode_params(raw)
        if m is protocol.STOP:
            asyncio.get_running_loop().call_later(0.05, self.d_stop)
            return protocol.StopResult(stopping=True)
        result: Struct = await getattr(self.d, m.name)(call, params)
        return result

    def d_stop(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


def acquire_lock(sock_path: Path) -> IO[str]:
    """Hold an exclusive lock for the daemon's lifetime: a second daemon is refused."""
    fd = os.open(paths.lock_file(sock_path), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    lock = os.fdopen(fd, "r+")  # held until exit
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


ORPHAN_CHECK_S = 2.0


async def watch_socket(sock_path: Path, stop: asyncio.Event) -> None:
    """Exit as an orphan when our socket file is gone or replaced (its runtime dir was deleted, say):
    no client can reach this daemon any more, and it must not go on holding a model and prefilling."""
    try:
        ino = os.stat(sock_path).st_ino
    except OSError:
        return
    while not stop.is_set():
        await asyncio.sleep(ORPHAN_CHECK_S)
        try:
            gone = os.stat(sock_path).st_ino != ino
        except OSError:
            gone = True
        if gone:
            log.warning("the socket %s is gone; no client can reach this daemon, exiting", sock_path)
            stop.set()


async def listen(
    on_client: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    sock_path: Path,
    inherited: socket.socket | None,
) -> asyncio.Server:
    """Serve the socket systemd passed, else a new one at `sock_path`, created 0600 (no moment of wider mode)."""
    if inherited is not None:
        return await asyncio.start_unix_server(on_client, sock=inherited, limit=rpc.MAX_FRAME)
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(on_client, path=str(sock_path), limit=rpc.MAX_FRAME)
    finally:
        os.umask(old_umask)
    os.chmod(sock_path, 0o600)
    return server


async def serve(daemon: Daemon, sock_path: Path | None = None) -> None:
    sock_path = sock_path or paths.socket_path()
    paths.prepare_socket_dir(sock_path)
    lock = acquire_lock(sock_path)
    inherited = inherited_socket()
    if inherited is not None:
        sock_path = Path(inherited.getsockname())
        log.info("socket activation: serving the socket systemd holds (%s)", sock_path)
    elif paths.remove_stale_socket(sock_path):
        log.info("removed the stale socket %s", sock_path)
    my_uid = os.getuid()
    conns: set[Connection] = set()
    budget = BufferBudget()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock)
        if uid != my_uid:
            log.warning("refused a connection from uid %d", uid)
            writer.close()
            return
        conn = Connection(daemon, reader, writer, budget)
        conns.add(conn)
        try:
            await conn.serve()
        finally:
            conns.discard(conn)

    server = await listen(on_client, sock_path, inherited)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    ours = os.stat(sock_path).st_ino
    orphan = asyncio.ensure_future(watch_socket(sock_path, stop))
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
        orphan.cancel()
        server.close()
        for c in list(conns):
            c.writer.close()
        await daemon.shutdown()
        if inherited is None:  # systemd's socket stays: the next connection starts a daemon again
            with contextlib.suppress(OSError, paths.SocketPathError):
                if os.lstat(sock_path).st_ino == ours:  # never another daemon's socket
                    paths.remove_stale_socket(sock_path)
        lock.close()
