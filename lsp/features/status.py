"""What the editor shows about the daemon: `banked/status` notifications, errors once per outage, and
`$/progress` while a large re-prefill (a checkout, a restart) runs.

The daemon is polled every few seconds (never starting one: after `banked stop`, one starts only when the
editor needs it); a notification goes out only when what it says changed, and never before the client has
been told the server is initialized.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from banked.daemon import paths
from banked.daemon.ipc import protocol, rpc
from banked.daemon.ipc.client import DaemonUnavailable
from banked.lsp.progress import progress
from lsprotocol import types

if TYPE_CHECKING:
    from banked.lsp.server import BankedServer

log = logging.getLogger(__name__)

STATUS = "banked/status"
INTERVAL_S = 2.0
REPREFILL_PROGRESS_TOKENS = 2048


class Status:
    def __init__(self, ls: BankedServer):
        self.ls = ls
        self.state = "disconnected"
        self.detail = ""
        self.daemon: protocol.StatusResult | None = None  # the last poll's answer
        self.ready = False  # `initialized` arrived: notifications may be sent
        self.failure_shown = False
        self.server_warned = False  # the team server's outage was shown
        self._sent: dict[str, Any] | None = None
        self._reprefill: tuple[asyncio.Task[None], asyncio.Event] | None = None

    def on_link_state(self, state: str, detail: str) -> None:
        self.state, self.detail = state, detail
        if state == "connected":
            self.failure_shown = False
        if state == "failed" and not self.failure_shown:  # once per outage, not at every retry
            self.failure_shown = True
            first = detail.splitlines()[0] if detail else ""
            self.ls.window_show_message(
                types.ShowMessageParams(
                    type=types.MessageType.Error,
                    message=f"banked: could not reach the daemon: {first} "
                    f"(see the log in {paths.log_dir()}; run `banked serve` to see why)",
                )
            )
        self.publish()

    def active(self) -> protocol.WorkspaceStatus | None:
        """The daemon's entry for the workspace its cache holds."""
        if self.daemon is None or self.state != "connected":
            return None
        return next((w for w in self.daemon.workspaces if w.active), None)

    def snapshot(self) -> dict[str, Any]:
        connected = self.state == "connected" and self.daemon is not None
        ws = self.active()
        tokens, synced = (ws.tokens or 0, ws.synced_tokens) if ws else (0, 0)
        return {
            "state": self.state,
            "detail": self.detail,
            "enabled": self.ls.settings.enabled,
            "engine": self.daemon.engine.name if connected and self.daemon else None,
            "model": self.daemon.engine.model if connected and self.daemon else None,
            "cached_tokens": synced,
            "workspace_tokens": tokens,
            "percent": round(100 * synced / tokens) if tokens else None,
            "workspace": ws.root if ws else None,
            "here": self.ls.warming.holds_this_window() if ws else None,  # the warm workspace is this window's
            "pending_jobs": self.daemon.pending_jobs if connected and self.daemon else 0,
            **self._server(connected),
        }

    def _server(self, connected: bool) -> dict[str, Any]:
        """A remote engine: its server, and what is wrong with it (unreachable, answering locally meanwhile)."""
        remote = self.daemon.engine.extra.get("remote") if connected and self.daemon else None
        if not isinstance(remote, dict):
            return {}
        problem = str(remote.get("problem") or "")
        if not problem and not remote.get("reachable", True):
            problem = f"the server at {remote.get('url')} does not answer"
        return {"server": remote.get("url"), "server_problem": problem}

    def publish(self, force: bool = False) -> None:
        """Send `banked/status` if it says something new (or when asked)."""
        if not self.ready:
            return
        now = self.snapshot()
        if now != self._sent or force:
            self._sent = now
            self.ls.protocol.notify(STATUS, now)

    async def refresh(self, autostart: bool = False) -> protocol.StatusResult:
        self.daemon = await self.ls.link.request(protocol.STATUS, protocol.NoParams(), autostart=autostart)
        self.track_reprefill()
        self.warn_about_server()
        self.publish()
        return self.daemon

    def warn_about_server(self) -> None:
        """Once per outage of a team server: say so, and what happens meanwhile (the status bar keeps it)."""
        problem = self._server(self.state == "connected").get("server_problem", "")
        if problem and not self.server_warned and self.ready:
            local = self.daemon is not None and self.daemon.engine.name != "remote"
            meanwhile = "answering from the local engine meanwhile" if local else "completions wait until it is back"
            self.ls.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Warning, message=f"banked: {problem}; {meanwhile}")
            )
        self.server_warned = bool(problem)

    async def poll(self) -> None:
        """Keep the editor's status current, reconnect after a restart, show long re-prefills."""
        delay = INTERVAL_S
        while True:
            try:
                await self.refresh(autostart=False)
                delay = INTERVAL_S
            except (DaemonUnavailable, rpc.RemoteError, OSError) as exc:
                log.info("status: %s", exc)
                delay = min(delay * 2, 30.0)
            await asyncio.sleep(delay)

    def track_reprefill(self) -> None:
        """A re-prefill of more than a few thousand tokens (a checkout, a restart) shows as progress."""
        ws = self.active()
        behind = (ws.tokens - ws.synced_tokens) if ws and ws.tokens else 0
        if behind > REPREFILL_PROGRESS_TOKENS and self._reprefill is None:
            done = asyncio.Event()
            self._reprefill = (self.ls.spawn(self._reprefill_progress(done)), done)
        elif behind <= 0 and self._reprefill is not None:
            self._reprefill[1].set()
            self._reprefill = None

    async def _reprefill_progress(self, done: asyncio.Event) -> None:
        async with progress(self.ls, "banked: re-prefilling the workspace", cancellable=False) as p:
            while not done.is_set():
                ws = self.active()
                if ws and ws.tokens:
                    p.report(f"{ws.synced_tokens:,}/{ws.tokens:,} tokens", round(100 * ws.synced_tokens / ws.tokens))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), INTERVAL_S)
