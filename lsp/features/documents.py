"""Open documents: where they live, which workspace folder holds them, and their unsaved text as overlays.

Unsaved buffers reach the daemon as overlays 0.3 s after the last change (so other files' unsaved edits join
the workspace context); a save or a close drops the overlay (the disk is the truth again); after the daemon
restarts, every open buffer that differs from disk is sent again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from banked.daemon import paths
from banked.daemon.ipc import protocol
from pygls import uris

if TYPE_CHECKING:
    from banked.lsp.server import BankedServer

OVERLAY_DEBOUNCE_S = 0.3
# While the user types, the daemon hears so at most this often: a background re-prefill that would move what
# completions run after waits for a pause (typing through a suggestion needs no daemon call, so without this
# a long stretch of typing looked like idleness to the daemon, and its sync re-prefilled under the cursor).
ACTIVE_EVERY_S = 1.0


class Documents:
    def __init__(self, ls: BankedServer):
        self.ls = ls
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self._active_sent: dict[str, float] = {}

    # -- where a document is -----------------------------------------------------------------

    @staticmethod
    def path_of(uri: str) -> Path | None:
        fs = uris.to_fs_path(uri)
        return Path(fs) if fs and uri.startswith("file:") else None

    def folders(self) -> list[str]:
        """The editor's workspace folders (or its root), as paths."""
        ws = self.ls.workspace
        found = [f for f in (uris.to_fs_path(x.uri) for x in ws.folders.values()) if f]
        return found or ([ws.root_path] if ws.root_path else [])

    def root_of(self, path: Path) -> str | None:
        """The editor's workspace folder holding `path`: the daemon's workspace for it."""
        found = paths.nearest_root(path, [Path(f) for f in self.folders()])
        return str(found) if found else None

    # -- overlays ----------------------------------------------------------------------------

    def opened(self, uri: str, text: str) -> None:
        path = self.path_of(uri)
        if path is None:
            return
        try:
            same = path.read_text(encoding="utf-8") == text
        except (OSError, UnicodeDecodeError):
            same = False  # a new, never-saved file
        if not same:  # opened with unsaved contents (a restored session, a new file)
            self.schedule(uri)

    def typed(self, uri: str) -> None:
        """A change in `uri`: tell the daemon the user is typing (throttled), and schedule the overlay."""
        now = asyncio.get_running_loop().time()
        path = self.path_of(uri)
        if path is not None and now - self._active_sent.get(uri, -1e9) >= ACTIVE_EVERY_S:
            self._active_sent[uri] = now
            params = protocol.ActiveParams(path=str(path), workspace=self.root_of(path))
            self.ls.link.notify(protocol.ACTIVE, protocol.encode(params))
        self.schedule(uri)

    def schedule(self, uri: str) -> None:
        old = self.timers.pop(uri, None)
        if old:
            old.cancel()
        self.timers[uri] = asyncio.get_running_loop().call_later(OVERLAY_DEBOUNCE_S, self.send, uri)

    def send(self, uri: str, text: str | None = "") -> None:
        """Send the document's text as its overlay (None: drop it, the disk is the truth)."""
        timer = self.timers.pop(uri, None)
        if timer:
            timer.cancel()
        path = self.path_of(uri)
        if path is None:
            return
        if text is None:
            if not path.is_file():
                return  # a deleted file: nothing to drop
        else:
            text = self.ls.workspace.get_text_document(uri).source
        params = protocol.OverlayParams(path=str(path), workspace=self.root_of(path), text=text)
        self.ls.link.notify(protocol.OVERLAY, protocol.encode(params))

    def resend(self) -> None:
        """A (re)started daemon knows no unsaved buffers: send every open document that differs from disk."""
        for uri, doc in list(self.ls.workspace.text_documents.items()):
            path = self.path_of(uri)
            if path is None:
                continue
            try:
                on_disk = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                on_disk = None
            if on_disk != doc.source:
                self.send(uri)
