"""Completions as the editor sees them: inline ghost text, or one classic item for clients without it.

What this feature owns is timing and staleness: requests are debounced, a
keystroke supersedes the request in flight (answered with nothing, and the
daemon's job cancelled), and an answer computed for an older version of the
buffer is never shown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from banked.daemon.ipc import protocol, rpc
from banked.daemon.ipc.client import DaemonUnavailable
from banked.lsp import text
from lsprotocol import types
from pygls.capabilities import get_capability

if TYPE_CHECKING:
    from banked.lsp.server import BankedServer

log = logging.getLogger(__name__)
METRICS = "banked/metrics"


@dataclass(frozen=True)
class Suggestion:
    text: str
    range: types.Range


class Completion:
    def __init__(self, ls: BankedServer):
        self.ls = ls
        self.inflight: dict[str, asyncio.Task[Suggestion | None]] = {}  # uri -> the completion being computed
        self.superseded: set[asyncio.Task[Suggestion | None]] = set()  # answered "nothing", not "cancelled"

    def supersede(self, uri: str) -> None:
        """The document changed: whatever was being computed for it is stale."""
        task = self.inflight.pop(uri, None)
        if task is not None:
            self.superseded.add(task)
            task.cancel()

    async def inline(self, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        found = await self.at(params.text_document.uri, params.position, invoked)
        if found is None:
            return types.InlineCompletionList(items=[])
        return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=found.text, range=found.range)])

    async def classic(self, params: types.CompletionParams) -> types.CompletionList:
        """For clients without inline completion: one item with the whole (multi-line) suggestion."""
        invoked = params.context is None or params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        found = await self.at(params.text_document.uri, params.position, invoked)
        if found is None:
            return types.CompletionList(is_incomplete=True, items=[])
        item = types.CompletionItem(
            label=text.label_for(found.text),
            kind=types.CompletionItemKind.Snippet,
            detail="banked",
            documentation=self._documentation(found.text),
            text_edit=types.TextEdit(range=found.range, new_text=found.text),
            insert_text_format=types.InsertTextFormat.PlainText,
            filter_text="",
            sort_text="0",
            preselect=True,
        )
        return types.CompletionList(is_incomplete=True, items=[item])

    def _documentation(self, insert: str) -> types.MarkupContent | str:
        formats = get_capability(
            self.ls.client_capabilities, "text_document.completion.completion_item.documentation_format", []
        )
        if types.MarkupKind.Markdown in formats:
            return types.MarkupContent(kind=types.MarkupKind.Markdown, value=f"```\n{insert}\n```")
        return insert

    async def at(self, uri: str, position: types.Position, invoked: bool) -> Suggestion | None:
        """The completion at `position`, or None when there is none or it went stale while computing."""
        self.supersede(uri)
        task = asyncio.current_task()
        assert task is not None
        self.inflight[uri] = task
        try:
            return await self._compute(uri, position, invoked)
        except asyncio.CancelledError:
            if task in self.superseded:
                return None  # typed over: an empty answer (the client did not cancel it)
            raise
        except (DaemonUnavailable, OSError) as exc:
            log.info("no completion: %s", exc)
            return None
        except rpc.RemoteError as exc:
            if exc.code != "bad_request" or str(exc) != "cancelled":
                log.warning("completion failed: %s", exc)
            return None
        finally:
            self.superseded.discard(task)
            if self.inflight.get(uri) is task:
                del self.inflight[uri]

    async def _compute(self, uri: str, position: types.Position, invoked: bool) -> Suggestion | None:
        t0 = time.perf_counter()
        settings = self.ls.settings
        doc = self.ls.workspace.get_text_document(uri)
        path = self.ls.documents.path_of(uri)
        if path is None or not settings.language_enabled(doc.language_id):
            return None
        if not invoked and settings.debounce_ms:
            await asyncio.sleep(settings.debounce_ms / 1000)
        version = doc.version
        pos = doc.position_codec.position_from_client_units(doc.lines, position)
        params = protocol.CompleteParams(
            path=str(path),
            text=doc.source,
            line=pos.line,
            col=pos.character,
            workspace=self.ls.documents.root_of(path),
            max_lines=settings.max_lines,
        )
        t1 = time.perf_counter()
        result = await self.ls.link.request(protocol.COMPLETE, params)
        t2 = time.perf_counter()
        if doc.version != version or self.inflight.get(uri) is not asyncio.current_task():
            return None  # typed on while the daemon worked: never show a stale completion
        if settings.metrics:
            self.ls.protocol.notify(
                METRICS,
                {
                    "uri": uri,
                    "daemon_ms": result.daemon_ms,
                    "link_ms": round(1000 * (t2 - t1), 3),
                    "server_ms": round(1000 * (time.perf_counter() - t0), 3),
                    "debounce_ms": settings.debounce_ms if not invoked else 0,
                },
            )
        if not result.text.strip():
            return None
        return Suggestion(result.text, types.Range(start=position, end=position))
