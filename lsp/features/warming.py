"""Which editor window's folders the daemon's one cache holds.

The daemon holds one workspace warm. Two editor windows that each warm their folders at start (the old
behaviour) fight over it: the cache flips to whichever window started last, and each flip re-prefills or
reloads a snapshot. So by default (`warm: "focused"`) a window warms its folders at start only when its
client says it is focused (clients that say nothing count as focused: a single editor behaves as before),
and again when it gains focus and keeps it for `FOCUS_SETTLE_S` (alt-tabbing through windows flips
nothing). `"start"` warms at start in every window; `"manual"` only on the Warm command. The status then
says whether the warm workspace is this window's (`here`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from banked.daemon.ipc import protocol, rpc
from banked.daemon.ipc.client import DaemonUnavailable
from banked.lsp.progress import progress

if TYPE_CHECKING:
    from banked.lsp.server import BankedServer

log = logging.getLogger(__name__)

FOCUS_SETTLE_S = 2.0


class Warming:
    def __init__(self, ls: BankedServer):
        self.ls = ls
        self.focused = True  # until the client says otherwise
        self._pending: asyncio.Task[None] | None = None

    async def warm(self, roots: list[str] | None = None) -> list[dict[str, Any]]:
        """Make this window's folders (or `roots`) the daemon's warm workspace, with `$/progress`."""
        results = []
        for root in roots or self.ls.documents.folders():
            async with progress(self.ls, f"banked: warming {Path(root).name}") as p:

                def on_progress(_method: str, note: dict[str, Any], rep: Any = p) -> None:
                    done, total = int(note.get("done", 0)), int(note.get("total", 0)) or 1
                    rep.report(f"{done:,}/{total:,} tokens", round(100 * done / total))

                result = await self.ls.link.request(protocol.WARM, protocol.WarmParams(root=root), on_progress)
                results.append(protocol.encode(result))
        self.ls.status.publish()
        return results

    def started(self) -> None:
        """`initialized`: warm now if the policy says so."""
        policy = self.ls.settings.warm
        if policy == "start" or (policy == "focused" and self.focused):
            self._spawn_warm(delay=0.0)

    def focus_changed(self, focused: bool) -> None:
        """The client's window gained or lost focus."""
        self.focused = focused
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if focused and self.ls.settings.warm == "focused" and not self.holds_this_window():
            self._spawn_warm(delay=FOCUS_SETTLE_S)

    def holds_this_window(self) -> bool:
        """Whether the daemon's warm workspace is one of this window's folders (as of the last status)."""
        ws = self.ls.status.active()
        return ws is not None and ws.root in {str(Path(f)) for f in self.ls.documents.folders()}

    def _spawn_warm(self, delay: float) -> None:
        async def run() -> None:
            try:
                await asyncio.sleep(delay)
                await self.warm()
            except (DaemonUnavailable, rpc.RemoteError) as exc:
                log.info("warm-up: %s", exc)

        self._pending = self.ls.spawn(run())
