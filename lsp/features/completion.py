"""Completions as the editor sees them: inline ghost text, or one classic item for clients without it.

Most keystrokes need no model call (the settings `reuse` and `speculate` turn
each technique off):

- **typing through**: while what the user types is a prefix of the suggestion
  shown, the rest of it is the answer (from the cache below);
- **a cache** of recent completions (ipc/reuse.py), so a backspace, a retype or
  an undo finds its suggestion again;
- **shared computations**: a model call already running for the text the user is
  typing on from is followed, not cancelled and started again;
- **text as it comes**: a request following a running call is answered as soon
  as the model has written anything past what the user typed (the line so far, or
  the whole line once it ends); the call goes on (so the next key shows more, and
  Tab, then Enter, finds the next line) while the user's typing still fits it. On a
  CPU a line takes a second or two to decode, the user types 4 keys a second:
  waiting for the whole line (or for each word to end) left those keys dark;
- **lookahead**: a call for a one-line suggestion that ends its line goes on to
  write the next line (streamed, and cached for after Enter), so the next line
  needs no new call: only its decoding, no prefill;
- **speculation**: when a suggestion is shown, the one after it (as if accepted)
  is computed at background priority while the user reads, so Tab shows the
  continuation at once; after a suggestion that ends its line, that is the next
  line (shown after the accept, and found again after Enter and auto-indent),
  unless the lookahead already has it.

A computation whose text the user has moved away from is cancelled, and an answer
is never shown unless it fits the buffer as it is when the answer is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from banked.daemon.ipc import protocol, rpc
from banked.daemon.ipc.client import DaemonUnavailable
from banked.daemon.ipc.reuse import MAX_TYPED, CompletionCache
from banked.lsp import text
from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.workspace import TextDocument

if TYPE_CHECKING:
    from banked.lsp.server import BankedServer

log = logging.getLogger(__name__)
# Lines the daemon goes on writing past a one-line answer that ends its line (`lookahead`): the next line is
# there when the user presses Enter, from the same call (a speculation would prefill the tail again first).
LOOKAHEAD_LINES = 1
METRICS = "banked/metrics"
# To the client: the suggestion for this document version has grown (a pause after part of a line was shown);
# ask again. banked's VS Code extension and Neovim plugin do; other clients see more at the next key.
REFRESH = "banked/refreshInline"
MODEL_CALL = "banked/modelCall"  # one per request sent to the daemon, when metrics are on (bench/typing.py)
# When metrics are on: how each request was answered and how each model call ended, with the daemon's own
# counts (bench/typing.py keeps them per key: what made a key dark is read off these, not guessed).
TRACE = "banked/trace"


@dataclass(frozen=True)
class Suggestion:
    text: str
    range: types.Range


@dataclass
class Computation:
    """A model call for the buffer split at a cursor into `before` and `after` (for a speculation, `before`
    ends with the suggestion it takes as accepted). `partial` is what the model has written so far."""

    before: str
    after: str
    speculative: bool = False
    partial: str = ""
    waiters: int = 0
    shown: bool = False  # a line of it was shown before it finished: it goes on without waiters
    task: asyncio.Task[str | None] | None = None
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # replaced and set at each new piece
    daemon_ms: float | None = None  # the daemon's own time for it, once answered
    link_ms: float | None = None  # the round trip through the socket
    serial: int = 0  # which model call this is (traces name it)
    dropped_why: str = ""  # why it was cancelled, if it was

    def typed(self, doc_text: str, toward: bool = True) -> str | None:
        """What the user typed after `before`, if the buffer is still `before` + that + `after` (None if not).
        For a speculation the user may still be typing toward `before`: then it is "" if consistent (unless
        `toward` is False: only text typed after `before` counts)."""
        if not doc_text.endswith(self.after) or len(doc_text) - len(self.after) > len(self.before) + MAX_TYPED:
            return None
        head = doc_text[: len(doc_text) - len(self.after)]
        if head.startswith(self.before):
            return head[len(self.before) :]
        return "" if toward and self.speculative and self.before.startswith(head) else None

    def unread(self, doc_text: str) -> str | None:
        """What the model has written past what the user typed, if the user typed from this call's own
        `before` and only what it wrote (some of it can be shown before the call finishes: the user reads and
        types while it goes on)."""
        typed = self.typed(doc_text, toward=False)
        if typed is None or not self.partial.startswith(typed):
            return None
        return self.partial[len(typed) :]

    def line_written(self, doc_text: str) -> bool:
        """Has the model finished the line the user is typing (as far as the user typed from this call)?"""
        rest = self.unread(doc_text)
        return rest is not None and first_line_end(rest) is not None

    def advanced(self) -> None:
        """Wake everyone following this call: it wrote more, or finished."""
        old, self.progress = self.progress, asyncio.Event()
        old.set()

    def fits(self, doc_text: str) -> bool:
        """Could this call's answer still be shown in a buffer with this text? No, once what the model has
        written so far contradicts what the user typed."""
        typed = self.typed(doc_text)
        if typed is None:
            return False
        n = min(len(typed), len(self.partial))
        return typed[:n] == self.partial[:n]

    def cancel(self, why: str = "") -> None:
        if self.task is not None and not self.task.done():
            log.debug("dropping the call for %d chars before: %s", len(self.before), why)
            self.dropped_why = self.dropped_why or why
            self.task.cancel()


class Completion:
    def __init__(self, ls: BankedServer):
        self.ls = ls
        self.cache = CompletionCache(size=100)
        self.computing: dict[str, Computation] = {}  # uri -> the request-driven model call
        self.speculating: dict[str, Computation] = {}  # uri -> the speculative one
        self.inflight: dict[str, asyncio.Task[Suggestion | None]] = {}  # uri -> the request being answered
        self.refreshing: dict[str, asyncio.Task[None]] = {}  # uri -> waiting to send REFRESH
        self.superseded: set[asyncio.Task[Suggestion | None]] = set()  # answered "nothing", not "cancelled"
        self.model_calls = 0  # requests sent to the daemon (bench/typing.py reads it through banked/metrics)
        self._serials = itertools.count(1)

    # -- LSP entry points --------------------------------------------------------------------

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

    def changed(self, uri: str) -> None:
        """The document changed: what was being computed for text the user has left behind is stale."""
        task = self.inflight.pop(uri, None)
        if task is not None:
            self.superseded.add(task)
            task.cancel()
        doc = self.ls.workspace.text_documents.get(uri)
        for table in (self.computing, self.speculating):
            comp = table.get(uri)
            if comp is not None and (doc is None or not self.ls.settings.reuse or not comp.fits(doc.source)):
                comp.cancel("the buffer no longer fits it")
                table.pop(uri, None)

    def closed(self, uri: str) -> None:
        self.changed(uri)
        self.cache.forget(uri)

    # -- answering ---------------------------------------------------------------------------

    async def at(self, uri: str, position: types.Position, invoked: bool) -> Suggestion | None:
        """The completion at `position`, or None when there is none or it no longer fits the buffer."""
        task = asyncio.current_task()
        assert task is not None
        self.inflight[uri] = task
        how = ["none"]  # how it was answered: reuse | follow | call | none (traced when metrics are on)
        t0 = time.perf_counter()
        doc = self.ls.workspace.text_documents.get(uri)
        version = doc.version if doc is not None else None
        try:
            found = await self._answer(uri, position, invoked, how)
            self._trace("request", uri=uri, version=version, how=how[0] if found else "none", t0=t0)
            return found
        except asyncio.CancelledError:
            self._trace("request", uri=uri, version=version, how="cancelled", t0=t0)
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

    async def _answer(self, uri: str, position: types.Position, invoked: bool, how: list[str]) -> Suggestion | None:
        t0 = time.perf_counter()
        settings = self.ls.settings
        doc = self.ls.workspace.get_text_document(uri)
        if self.ls.documents.path_of(uri) is None or not settings.language_enabled(doc.language_id):
            return None
        version = doc.version
        before, after = split(doc, position)
        log.debug("request v%d at %s:%s (%d chars before)", version, position.line, position.character, len(before))
        followed = False
        if settings.reuse:
            how[0] = "reuse"
            found = self._reuse(uri, before, after, position)
            if found is None and (comp := self._sharable(uri, doc.source)) is not None:
                log.debug("v%d follows a running call (%d chars before)", version, len(comp.before))
                how[0] = f"follow:{comp.serial}"
                found, final = await self._follow(uri, comp, version, before, after, position, invoked)
                if found is None and final:
                    return None
                followed = True
            if found is not None:
                self._metrics(uri, t0, None, invoked)
                return found
        # The debounce keeps a burst of keys from starting a call each. A request that followed a call until
        # the model took it elsewhere has waited already, for this very text: it asks again at once.
        if not invoked and settings.debounce_ms and not followed:
            await asyncio.sleep(settings.debounce_ms / 1000)
        if doc.version != version:
            return None
        comp = self._start(uri, doc, before, after, position)
        how[0] = f"call:{comp.serial}"
        if settings.reuse:
            found, _ = await self._follow(uri, comp, version, before, after, position, invoked)
            self._metrics(uri, t0, comp if comp.daemon_ms is not None else None, invoked)
            return found
        result = await self._wait(comp)
        log.debug("v%d: model answered %r (doc now v%d)", version, (result or "")[:20], doc.version)
        if doc.version != version:
            return None  # typed on while the daemon worked: the editor asks again
        self._metrics(uri, t0, comp, invoked)
        if not result or not result.strip():
            return None
        return Suggestion(result, types.Range(start=position, end=position))

    async def _follow(
        self,
        uri: str,
        comp: Computation,
        version: int | None,
        before: str,
        after: str,
        position: types.Position,
        invoked: bool = False,
    ) -> tuple[Suggestion | None, bool]:
        """Follow a running call for the buffer at `version`: its answer (from the cache it goes into) once
        it finishes, or a piece of it as soon as there is one past what the user typed (`next_piece`; for an
        invoked request, a whole line: the user asked, and reads what comes). The flag says whether the
        outcome is final (False: the call was dropped or its answer does not fit; ask again)."""
        doc = self.ls.workspace.get_text_document(uri)
        assert comp.task is not None
        comp.waiters += 1
        try:
            while doc.version == version:
                progress = comp.progress  # the event of this moment: set by the next piece or the end
                if comp.task.done():
                    found = self._reuse(uri, before, after, position)
                    dropped = comp.task.cancelled() or (comp.task.exception() is not None)
                    return found, found is not None or (not dropped and comp.before == before)
                rest = comp.unread(doc.source)
                piece = next_piece(rest) if rest is not None else None
                whole = rest is not None and first_line_end(rest) is not None
                if piece and (whole or not invoked):
                    comp.shown = True  # the user may type into the rest: keep the call going
                    if not whole:
                        self._refresh_when_written(uri, comp, version)
                    return Suggestion(piece, types.Range(start=position, end=position)), True
                await progress.wait()
            return None, True  # typed on: the editor asks again
        finally:
            self._release(comp)

    def _refresh_when_written(self, uri: str, comp: Computation, version: int | None) -> None:
        """Part of a line was shown; if the user stops typing, ask the client to ask again once the model has
        written the whole line (`banked/refreshInline`): LSP has no way to send a longer suggestion by itself,
        and without this a pause would leave the first words on screen."""
        old = self.refreshing.pop(uri, None)
        if old is not None:
            old.cancel()

        async def wait() -> None:
            doc = self.ls.workspace.get_text_document(uri)
            while doc.version == version and comp.task is not None:
                progress = comp.progress
                if comp.task.done() or comp.line_written(doc.source):
                    if not comp.task.cancelled() and doc.version == version:
                        self.ls.protocol.notify(REFRESH, {"uri": uri, "version": version})
                    return
                await progress.wait()

        task = self.refreshing[uri] = asyncio.ensure_future(wait())
        task.add_done_callback(lambda t: self.refreshing.pop(uri, None) if self.refreshing.get(uri) is t else None)

    def _reuse(self, uri: str, before: str, after: str, position: types.Position) -> Suggestion | None:
        hit = self.cache.get(uri, before, after)
        if hit is None or not hit.text.strip():
            return None
        doc = self.ls.workspace.get_text_document(uri)
        self._speculate(uri, doc, before, after, hit.text)
        return Suggestion(hit.text, types.Range(start=position, end=position))

    def _sharable(self, uri: str, doc_text: str) -> Computation | None:
        for comp in (self.computing.get(uri), self.speculating.get(uri)):
            if comp is not None and comp.task is not None and not comp.task.done() and comp.fits(doc_text):
                return comp
        return None

    async def _wait(self, comp: Computation) -> str | None:
        """A computation's answer, shared by every request that waits for it. Cancelling one waiter does not
        cancel the call (the user may type on into it); once nobody waits for a non-speculative call, it is
        cancelled after a moment unless a new request takes it up."""
        assert comp.task is not None
        comp.waiters += 1
        try:
            return await asyncio.shield(comp.task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # this request was cancelled
            return None  # the call was dropped (the user typed something else)
        finally:
            self._release(comp)

    def _release(self, comp: Computation) -> None:
        """One waiter fewer. A request-driven call nobody waits for any more, and none of which was shown, is
        cancelled after a moment unless a new request takes it up (the editor cancels and asks again)."""
        comp.waiters -= 1
        if comp.waiters == 0 and not comp.speculative and not comp.shown and comp.task and not comp.task.done():
            asyncio.get_running_loop().call_later(0.15, self._abandoned, comp)

    def _abandoned(self, comp: Computation) -> None:
        if comp.waiters == 0 and not comp.shown and comp.task is not None and not comp.task.done():
            comp.cancel("nobody waits for it")

    def _start(self, uri: str, doc: TextDocument, before: str, after: str, position: types.Position) -> Computation:
        old = self.computing.pop(uri, None)
        if old is not None:
            old.cancel("a new request replaces it")
        pos = doc.position_codec.position_from_client_units(doc.lines, position)
        comp = self.computing[uri] = Computation(before, after, serial=next(self._serials))
        self._launch(uri, comp, doc.source, pos.line, pos.character)
        return comp

    def _launch(self, uri: str, comp: Computation, source: str, line: int, col: int) -> None:
        comp.task = asyncio.ensure_future(self._call(uri, comp, source, line, col))
        comp.task.add_done_callback(lambda _t: comp.advanced())

    def _speculate(self, uri: str, doc: TextDocument, before: str, after: str, shown: str) -> None:
        """Compute the completion that follows `shown`, as if the user accepted it, while they read.

        A suggestion that ends its line is followed by the next line: the speculation's cursor is at the start
        of a new line after it (where the user's Enter puts it), since at the end of a finished line there is
        nothing to add. Its answer is also kept for the end of the accepted line, with the line break in front
        (ghost text of the next line, as Copilot shows it after an accept)."""
        settings = self.ls.settings
        if not settings.speculate or not settings.reuse or not shown.strip():
            return
        assumed = before + shown
        if not shown.endswith("\n") and not after.split("\n", 1)[0].strip():
            assumed += "\n"
        old = self.speculating.get(uri)
        if old is not None and old.before == assumed and old.after == after:
            return
        if old is not None:
            old.cancel("a new speculation replaces it")
        if self.cache.get(uri, assumed, after) is not None:
            return
        lines = assumed.split("\n")
        comp = self.speculating[uri] = Computation(assumed, after, speculative=True, serial=next(self._serials))
        self._launch(uri, comp, assumed + after, len(lines) - 1, len(lines[-1]))

    async def _call(self, uri: str, comp: Computation, source: str, line: int, col: int) -> str | None:
        """One daemon request; its answer goes into the cache (typing through it needs no other call)."""
        path = self.ls.documents.path_of(uri)
        assert path is not None
        params = protocol.CompleteParams(
            path=str(path),
            text=source,
            line=line,
            col=col,
            workspace=self.ls.documents.root_of(path),
            max_lines=self.ls.settings.max_lines,
            speculative=comp.speculative,
            reuse=self.ls.settings.reuse,
            lookahead=LOOKAHEAD_LINES if self.ls.settings.speculate and self.ls.settings.reuse else 0,
        )

        def streamed(_method: str, note: dict[str, object]) -> None:
            comp.partial += str(note.get("text", ""))
            doc = self.ls.workspace.text_documents.get(uri)
            if doc is not None and not comp.fits(doc.source):
                comp.cancel(f"the model wrote {comp.partial!r}")  # the user did not type that: drop it now
            comp.advanced()

        self.model_calls += 1
        if self.ls.settings.metrics:
            self.ls.protocol.notify(MODEL_CALL, {"uri": uri, "speculative": comp.speculative, "call": comp.serial})
        log.debug(
            "calling the daemon (%s, %d chars before)",
            "speculative" if comp.speculative else "request",
            len(comp.before),
        )
        t0 = time.perf_counter()
        try:
            result = await self.ls.link.request(protocol.COMPLETE, params, streamed)
        except asyncio.CancelledError:
            self._trace("call", uri=uri, call=comp.serial, outcome="dropped", why=comp.dropped_why, t0=t0)
            raise
        except (DaemonUnavailable, OSError, rpc.RemoteError) as exc:
            log.info("%s completion: %s", "speculative" if comp.speculative else "a", exc)
            self._trace("call", uri=uri, call=comp.serial, outcome="failed", why=str(exc), t0=t0)
            return None
        comp.link_ms, comp.daemon_ms = round(1000 * (time.perf_counter() - t0), 3), result.daemon_ms
        self._trace(
            "call",
            uri=uri,
            call=comp.serial,
            outcome="answered",
            speculative=comp.speculative,
            text=result.text,
            reused=result.reused_tokens,
            prefilled=result.prefilled_tokens,
            generated=result.generated_tokens,
            ttft_ms=result.ttft_ms,
            daemon_ms=result.daemon_ms,
            t0=t0,
        )
        log.debug("answered for %d chars before: %r, ahead %r", len(comp.before), result.text, result.ahead)
        if self.ls.settings.reuse:
            self.cache.put(uri, comp.before, comp.after, result.text)
            if comp.speculative and comp.before.endswith("\n") and result.text.strip():
                self.cache.put(uri, comp.before[:-1], comp.after, "\n" + result.text)  # the end of the line
            nxt = result.ahead.split("\n", 1)[0]
            if nxt.strip():  # the line the model wrote after this one: after Enter, and at the end of this one
                line_end = comp.before + result.text
                self.cache.put(uri, line_end + "\n", comp.after, nxt)
                self.cache.put(uri, line_end, comp.after, "\n" + nxt)
                doc = self.ls.workspace.text_documents.get(uri)
                if not comp.speculative and doc is not None:  # and the line after that, while the user types
                    self._speculate(uri, doc, line_end + "\n", comp.after, nxt)
        return result.text

    def _trace(self, event: str, t0: float, **fields: object) -> None:
        """banked/trace (when metrics are on): one request's outcome or one model call's end, with its time."""
        if self.ls.settings.metrics:
            ms = round(1000 * (time.perf_counter() - t0), 1)
            self.ls.protocol.notify(TRACE, {"event": event, "ms": ms, **fields})

    def _metrics(self, uri: str, t0: float, comp: Computation | None, invoked: bool) -> None:
        """banked/metrics (when asked for): where this answer came from and what it cost (bench/lsp.py)."""
        if self.ls.settings.metrics:
            self.ls.protocol.notify(
                METRICS,
                {
                    "uri": uri,
                    "cached": comp is None,
                    "daemon_ms": comp.daemon_ms if comp else None,
                    "link_ms": comp.link_ms if comp else None,
                    "server_ms": round(1000 * (time.perf_counter() - t0), 3),
                    "debounce_ms": self.ls.settings.debounce_ms if not invoked else 0,
                    "model_calls": self.model_calls,
                },
            )

    async def close(self) -> None:
        for task in self.refreshing.values():
            task.cancel()
        for comp in [*self.computing.values(), *self.speculating.values()]:
            comp.cancel()
            if comp.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await comp.task


def next_piece(rest: str) -> str | None:
    """The first line of `rest` that has code in it, with the line breaks before it, as far as the model has
    written it (its last word may still grow: `Res` before `ult`; it is a prefix of the answer all the same,
    and waiting for the word to end cost a token's time, ~100 ms here, at every key). None while there is no
    code yet. Trailing blanks are left out: the user types them only with what follows."""
    end = first_line_end(rest)
    if end is not None:
        return rest[:end].rstrip()
    piece = rest.rstrip()
    return piece if piece.strip() else None


def first_line_end(rest: str) -> int | None:
    """Where the first line of `rest` that has code in it ends, if the model has ended it."""
    start = len(rest) - len(rest.lstrip())
    end = rest.find("\n", start)
    return end if end > start else None


def split(doc: TextDocument, position: types.Position) -> tuple[str, str]:
    """The document's text before and after a position (given in the client's units)."""
    offset = doc.offset_at_position(position)
    return doc.source[:offset], doc.source[offset:]
