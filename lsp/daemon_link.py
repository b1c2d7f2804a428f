"""The language server's connection to the daemon: asyncio msgpack-RPC that outlives daemon restarts.

The server's event loop must never block on the daemon, and a daemon that dies
(crash, `banked stop`, an upgrade) must not take the editor's completions with
it: the link fails the calls in flight, reconnects on the next call (starting a
daemon when allowed and none runs, exactly as the CLI does) and reports each
change of state so the editor can show it. Cancelling the awaiting task cancels
the daemon's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from banked.daemon import paths
from banked.daemon.ipc import client as daemon_client
from banked.daemon.ipc import protocol, rpc
from banked.daemon.ipc.client import DaemonUnavailable
from banked.daemon.ipc.protocol import P, R

log = logging.getLogger(__name__)

OnNotify = Callable[[str, dict[str, Any]], None]
OnState = Callable[[str, str], None]  # (state, detail): "connected" | "disconnected" | "starting" | "failed"

__all__ = ["DaemonLink", "DaemonUnavailable"]


class DaemonLink:
    def __init__(
        self,
        sock: Path | None = None,
        autostart: bool = True,
        on_state: OnState | None = None,
        connect_timeout: float = 300.0,
    ):
        self.sock = sock  # None: the usual socket (paths.socket_path())
        self.autostart = autostart
        self.on_state = on_state or (lambda state, detail: None)
        self.connect_timeout = connect_timeout
        self._ids = itertools.count(1)
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._listeners: dict[int, OnNotify] = {}
        self._connect_lock = asyncio.Lock()
        self.connections = 0  # how many times a connection was made (a reconnect makes it > 1)

    @property
    def socket(self) -> Path:
        return self.sock or paths.socket_path()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def ensure(self, autostart: bool | None = None) -> None:
        """Connect if not connected, starting a daemon when allowed (this call's `autostart`, else the link's)
        and none runs."""
        if self.connected:
            return
        allowed = self.autostart if autostart is None else autostart
        async with self._connect_lock:
            if self.connected:
                return
            sock = self.socket
            try:
                reader, writer = await asyncio.open_unix_connection(str(sock), limit=rpc.MAX_FRAME)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if not allowed:
                    raise DaemonUnavailable(
                        f"no banked daemon is running on {sock}; one starts when the editor next needs it"
                    ) from exc
                self.on_state("starting", f"starting the banked daemon on {sock}")
                try:
                    # The blocking client's auto-start handles races with other starters and a daemon still exiting.
                    c = await asyncio.to_thread(daemon_client.connect, True, self.connect_timeout, self.sock)
                except DaemonUnavailable as exc2:
                    self.on_state("failed", str(exc2))
                    raise
                c.close()
                reader, writer = await asyncio.open_unix_connection(str(sock), limit=rpc.MAX_FRAME)
            self._writer = writer
            self._reader_task = asyncio.ensure_future(self._read(reader, writer))
            self.connections += 1
            self.on_state("connected", str(sock))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unpacker = rpc.unpacker()
        try:
            while data := await reader.read(65536):
                unpacker.feed(data)
                for obj in unpacker:
                    self._dispatch(rpc.parse(obj))
        except (ConnectionError, rpc.ProtocolError, ValueError) as exc:
            log.warning("daemon connection lost: %s", exc)
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            pending, self._pending = self._pending, {}
            self._listeners.clear()
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(DaemonUnavailable("the daemon closed the connection (it was stopped or crashed)"))
            self.on_state("disconnected", "the daemon closed the connection")

    def _dispatch(self, msg: rpc.Message) -> None:
        if msg.kind == rpc.RESPONSE and msg.id is not None:
            fut = self._pending.pop(msg.id, None)
            self._listeners.pop(msg.id, None)
            if fut is None or fut.done():
                return
            if msg.error:
                fut.set_exception(rpc.RemoteError.from_response(msg.error))
            else:
                fut.set_result(msg.result)
        elif msg.kind == rpc.NOTIFICATION and isinstance(msg.params, dict):
            listener = self._listeners.get(msg.params.get("id", -1))
            if listener is not None:
                listener(msg.method or "", msg.params)

    async def request(
        self, method: protocol.Method[P, R], params: P, on_notify: OnNotify | None = None, autostart: bool | None = None
    ) -> R:
        """One typed request; cancelling the awaiting task sends the daemon a `cancel` for it at once."""
        raw = await self.call(method.name, protocol.encode(params), on_notify, autostart)
        return method.decode_result(raw)

    async def call(
        self, method: str, params: Any, on_notify: OnNotify | None = None, autostart: bool | None = None
    ) -> Any:
        await self.ensure(autostart)
        assert self._writer is not None
        msgid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msgid] = fut
        if on_notify is not None:
            self._listeners[msgid] = on_notify
        self._writer.write(rpc.request(msgid, method, params))
        try:
            return await fut
        except asyncio.CancelledError:
            self._pending.pop(msgid, None)
            self._listeners.pop(msgid, None)
            self.notify(protocol.CANCEL, {"id": msgid})
            raise

    def notify(self, method: str, params: Any) -> bool:
        """Best effort: False when not connected (overlays are re-sent after a reconnect)."""
        if not self.connected:
            return False
        assert self._writer is not None
        self._writer.write(rpc.notification(method, params))
        return True

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
