"""`banked-lsp`: the language server. A client of the daemon; it never loads a model.

Handlers are thin: each turns an LSP request into one daemon call and the
answer back into LSP shapes (`text.py`). What the server itself owns is the
editor-facing behaviour: debounce, superseding and cancelling completions so a
stale one is never shown, overlays of unsaved buffers, progress, settings, and
staying up across daemon restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from banked.daemon import __version__, paths
from banked.daemon.ipc import client as daemon_client
from banked.daemon.ipc import rpc
from lsprotocol import types
from pygls import uris
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.workspace import TextDocument

from . import text
from .daemon_link import DaemonLink, DaemonUnavailable
from .progress import progress
from .settings import Settings

log = logging.getLogger(__name__)

OVERLAY_DEBOUNCE_S = 0.3
STATUS_INTERVAL_S = 2.0
KIND_EXPLAIN = "refactor.banked.explain"
KIND_REFACTOR = "refactor.rewrite.banked"
KIND_DOCSTRING = "refactor.rewrite.banked.docstring"
KIND_TESTS = "source.banked.tests"
REFACTOR_PRESETS = [
    "Simplify this code without changing what it does",
    "Add type annotations",
    "Improve the names",
    "Handle errors explicitly",
]


class BankedServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("banked-lsp", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.settings = Settings()
        self.link = DaemonLink(on_state=self._on_link_state)
        self.state = "disconnected"
        self.state_detail = ""
        self.inflight: dict[str, asyncio.Task[Any]] = {}  # uri -> the completion being computed
        self.superseded: set[asyncio.Task[Any]] = set()  # answered "nothing", not "cancelled"
        self.overlay_timers: dict[str, asyncio.TimerHandle] = {}
        self.last_status: dict[str, Any] = {}
        self.background: set[asyncio.Task[Any]] = set()
        self.prefill_progress: tuple[Any, asyncio.Event] | None = None
        self.failure_shown = False

    # -- daemon connection and status ------------------------------------------------------

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    def _on_link_state(self, state: str, detail: str) -> None:
        was = self.state
        self.state, self.state_detail = state, detail
        if state == "connected":
            self.failure_shown = False
            self.resend_overlays()
        if state == "failed" and not self.failure_shown:  # once per outage, not at every retry
            self.failure_shown = True
            self.window_show_message(
                types.ShowMessageParams(
                    type=types.MessageType.Error,
                    message=f"banked: could not reach the daemon: {detail.splitlines()[0] if detail else ''} "
                    f"(see the log in {paths.log_dir()}; run `banked serve` to see why)",
                )
            )
        if state != was:
            self.publish_status()

    def active_workspace(self) -> dict[str, Any]:
        """The daemon's entry for the workspace its cache holds (from the last status poll)."""
        return next((w for w in self.last_status.get("workspaces", []) if w.get("active")), {})

    def publish_status(self) -> None:
        st = self.last_status
        ws: dict[str, Any] = self.active_workspace() if self.state == "connected" else {}
        tokens, synced = ws.get("tokens") or 0, ws.get("synced_tokens") or 0
        self.protocol.notify(
            "banked/status",
            {
                "state": self.state,
                "detail": self.state_detail,
                "enabled": self.settings.enabled,
                "engine": st.get("engine", {}).get("name") if self.state == "connected" else None,
                "model": st.get("engine", {}).get("model") if self.state == "connected" else None,
                "cached_tokens": synced,
                "workspace_tokens": tokens,
                "percent": round(100 * synced / tokens) if tokens else None,
                "workspace": ws.get("root"),
                "pending_jobs": st.get("pending_jobs", 0),
            },
        )

    async def poll_status(self) -> None:
        """Keep the editor's status current, reconnect after a restart, show long re-prefills."""
        delay = STATUS_INTERVAL_S
        while True:
            try:
                # Never starts a daemon: after `banked stop` one starts again only when the editor needs it.
                self.last_status = await self.link.call("status", {}, autostart=False)
                delay = STATUS_INTERVAL_S
                self.track_prefill()
                self.publish_status()
            except (DaemonUnavailable, rpc.RemoteError, OSError) as exc:
                log.info("status: %s", exc)
                delay = min(delay * 2, 30.0)
            await asyncio.sleep(delay)

    def track_prefill(self) -> None:
        """A re-prefill of more than a few thousand tokens (a checkout, a restart) shows as progress."""
        ws = self.active_workspace()
        behind = (ws["tokens"] - ws["synced_tokens"]) if ws and ws.get("tokens") else 0
        if behind > 2048 and self.prefill_progress is None:
            done = asyncio.Event()
            self.prefill_progress = (self.spawn(self._prefill_progress(done)), done)
        elif behind <= 0 and self.prefill_progress is not None:
            self.prefill_progress[1].set()
            self.prefill_progress = None

    async def _prefill_progress(self, done: asyncio.Event) -> None:
        async with progress(self, "banked: re-prefilling the workspace", cancellable=False) as p:
            while not done.is_set():
                ws = self.active_workspace()
                if ws.get("tokens"):
                    pct = round(100 * ws["synced_tokens"] / ws["tokens"])
                    p.report(f"{ws['synced_tokens']:,}/{ws['tokens']:,} tokens", pct)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), STATUS_INTERVAL_S)

    def resend_overlays(self) -> None:
        """A (re)started daemon knows no unsaved buffers: send every open document that differs from disk."""
        for uri, doc in list(self.workspace.text_documents.items()):
            path = self.path_of(uri)
            if path is None:
                continue
            try:
                on_disk = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                on_disk = None
            if on_disk != doc.source:
                self.send_overlay(uri)

    # -- documents -------------------------------------------------------------------------

    def path_of(self, uri: str) -> Path | None:
        fs = uris.to_fs_path(uri)
        return Path(fs) if fs and uri.startswith("file:") else None

    def root_of(self, path: Path) -> str | None:
        best: str | None = None
        for folder in self.workspace.folders.values():
            fs = uris.to_fs_path(folder.uri)
            if fs and path.is_relative_to(fs) and (best is None or len(fs) > len(best)):
                best = fs
        if best is None and self.workspace.root_path and path.is_relative_to(self.workspace.root_path):
            best = self.workspace.root_path
        return best

    def send_overlay(self, uri: str, closed: bool = False) -> None:
        timer = self.overlay_timers.pop(uri, None)
        if timer:
            timer.cancel()
        path = self.path_of(uri)
        if path is None:
            return
        params: dict[str, Any] = {"path": str(path), "workspace": self.root_of(path)}
        if closed:
            if not path.is_file():
                return  # a deleted file: nothing to drop
            params["text"] = None
        else:
            doc = self.workspace.get_text_document(uri)
            params["text"] = doc.source
        self.link.notify("overlay", params)

    def schedule_overlay(self, uri: str) -> None:
        old = self.overlay_timers.pop(uri, None)
        if old:
            old.cancel()
        self.overlay_timers[uri] = asyncio.get_running_loop().call_later(OVERLAY_DEBOUNCE_S, self.send_overlay, uri)

    def supersede(self, uri: str) -> None:
        """The document changed: whatever was being computed for it is stale."""
        task = self.inflight.pop(uri, None)
        if task is not None:
            self.superseded.add(task)
            task.cancel()

    # -- completion ------------------------------------------------------------------------

    async def complete(self, uri: str, position: types.Position, invoked: bool) -> tuple[str, types.Range] | None:
        """The completion at `position`, or None when there is none or it went stale while computing."""
        self.supersede(uri)
        task = asyncio.current_task()
        assert task is not None
        self.inflight[uri] = task
        t0 = time.perf_counter()
        try:
            doc = self.workspace.get_text_document(uri)
            path = self.path_of(uri)
            if path is None or not self.settings.language_enabled(doc.language_id):
                return None
            if not invoked and self.settings.debounce_ms:
                await asyncio.sleep(self.settings.debounce_ms / 1000)
            version = doc.version
            pos = doc.position_codec.position_from_client_units(doc.lines, position)
            params: dict[str, Any] = {
                "path": str(path),
                "text": doc.source,
                "line": pos.line,
                "col": pos.character,
                "workspace": self.root_of(path),
            }
            if self.settings.max_lines is not None:
                params["max_lines"] = self.settings.max_lines
            t1 = time.perf_counter()
            result = await self.link.call("complete", params)
            t2 = time.perf_counter()
            if doc.version != version or self.inflight.get(uri) is not task:
                return None  # typed on while the daemon worked: never show a stale completion
            if self.settings.metrics:
                self.protocol.notify(
                    "banked/metrics",
                    {
                        "uri": uri,
                        "daemon_ms": result.get("daemon_ms"),
                        "link_ms": round(1000 * (t2 - t1), 3),
                        "server_ms": round(1000 * (time.perf_counter() - t0), 3),
                        "debounce_ms": self.settings.debounce_ms if not invoked else 0,
                    },
                )
            insert = str(result.get("text") or "")
            if not insert.strip():
                return None
            return insert, types.Range(start=position, end=position)
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

    # -- explain / refactor / tests ----------------------------------------------------------

    def selection(self, uri: str, rng: types.Range | None) -> tuple[TextDocument, Path, dict[str, int]]:
        """The document, its path, and the lines to work on (none selected: the daemon takes the code around
        the cursor, the enclosing definition where it knows the language)."""
        doc = self.workspace.get_text_document(uri)
        path = self.path_of(uri)
        if path is None:
            raise UserFacingError("banked works on files on disk; save this buffer first")
        if rng is None or rng.start == rng.end:
            return doc, path, {"cursor_line": rng.start.line if rng else 0}
        start, end = text.selected_lines(rng)
        return doc, path, {"start_line": start, "end_line": end}

    async def chat(
        self, method: str, title: str, uri: str, rng: types.Range | None, extra: dict[str, Any] | None = None
    ) -> tuple[TextDocument, dict[str, Any]]:
        doc, path, lines = self.selection(uri, rng)
        version = doc.version
        params = {"path": str(path), "text": doc.source, "workspace": self.root_of(path), **lines, **(extra or {})}
        async with progress(self, title) as p:
            streamed: list[str] = []

            def on_text(_method: str, note: dict[str, Any]) -> None:
                streamed.append(str(note.get("text", "")))
                words = "".join(streamed).split()
                p.report(" ".join(words[-8:]))

            try:
                result = await self.link.call(method, params, on_text)
            except rpc.RemoteError as exc:
                raise UserFacingError(f"banked: {exc}") from exc
            except DaemonUnavailable as exc:
                raise UserFacingError(f"banked: {exc}") from exc
        if doc.version != version:
            raise UserFacingError("banked: the file changed while the model was working; try again")
        return doc, result

    async def explain(self, uri: str, rng: types.Range | None) -> dict[str, Any]:
        doc, result = await self.chat("explain", "banked: explaining", uri, rng)
        rel, a, b = result["path"], result["start_line"], result["end_line"]
        out_dir = paths.cache_dir() / "explanations"
        out_dir.mkdir(parents=True, exist_ok=True)
        md = out_dir / f"{rel.replace('/', '_')}-L{a}-{b}.md"
        md.write_text(f"# {rel}, lines {a}–{b}\n\n{result['text'].strip()}\n", encoding="utf-8")
        md_uri = uris.from_fs_path(str(md)) or md.as_uri()
        with contextlib.suppress(Exception):
            await self.window_show_document_async(types.ShowDocumentParams(uri=md_uri, take_focus=True))
        return {"text": result["text"], "uri": md_uri, "path": rel, "start_line": a, "end_line": b}

    async def refactor_edit(
        self, uri: str, rng: types.Range | None, instruction: str
    ) -> tuple[types.WorkspaceEdit, dict[str, Any]]:
        doc, result = await self.chat("refactor", "banked: refactoring", uri, rng, {"instruction": instruction})
        edit = text.replace_lines_edit(doc.source, result["start_line"], result["end_line"], result["replacement"])
        ident = types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=doc.version)
        return types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(text_document=ident, edits=[edit])]), result

    async def tests_edit(self, uri: str, rng: types.Range | None) -> types.WorkspaceEdit:
        doc, result = await self.chat("write_tests", "banked: writing tests", uri, rng)
        path = self.path_of(uri)
        assert path is not None
        target = Path(text.test_file_for(str(path)))
        target_uri = uris.from_fs_path(str(target)) or target.as_uri()
        code = result["code"]
        open_doc = self.workspace.text_documents.get(target_uri)
        if open_doc is not None or target.exists():
            current = open_doc.source if open_doc else target.read_text(encoding="utf-8")
            ident = types.OptionalVersionedTextDocumentIdentifier(
                uri=target_uri, version=open_doc.version if open_doc else None
            )
            changes: list[Any] = [types.TextDocumentEdit(text_document=ident, edits=[text.append_edit(current, code)])]
        else:
            start = types.Position(line=0, character=0)
            changes = [
                types.CreateFile(uri=target_uri, options=types.CreateFileOptions(ignore_if_exists=True)),
                types.TextDocumentEdit(
                    text_document=types.OptionalVersionedTextDocumentIdentifier(uri=target_uri, version=None),
                    edits=[types.TextEdit(range=types.Range(start=start, end=start), new_text=code)],
                ),
            ]
        return types.WorkspaceEdit(document_changes=changes)

    async def apply(self, edit: types.WorkspaceEdit, label: str) -> bool:
        result = await self.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=edit, label=label))
        if not result.applied:
            raise UserFacingError(f"banked: the editor did not apply the edit ({result.failure_reason or 'refused'})")
        return True

    async def ask_instruction(self) -> str | None:
        """Clients without an input box get preset instructions (VS Code and Neovim ask for free text)."""
        choice = await self.window_show_message_request_async(
            types.ShowMessageRequestParams(
                type=types.MessageType.Info,
                message="banked: refactor how?",
                actions=[types.MessageActionItem(title=t) for t in REFACTOR_PRESETS],
            )
        )
        return choice.title if choice else None

    # -- workspace -------------------------------------------------------------------------

    def roots(self) -> list[str]:
        folders = [uris.to_fs_path(f.uri) for f in self.workspace.folders.values()]
        found = [f for f in folders if f] or ([self.workspace.root_path] if self.workspace.root_path else [])
        return [str(f) for f in found]

    async def warm(self, roots: list[str] | None = None) -> list[dict[str, Any]]:
        results = []
        for root in roots or self.roots():
            async with progress(self, f"banked: warming {Path(root).name}") as p:

                def on_progress(_method: str, note: dict[str, Any], rep: Any = p) -> None:
                    done, total = int(note.get("done", 0)), int(note.get("total", 0)) or 1
                    rep.report(f"{done:,}/{total:,} tokens", round(100 * done / total))

                results.append(await self.link.call("warm", {"root": root}, on_progress))
        return results

    async def restart_daemon(self) -> dict[str, Any]:
        with contextlib.suppress(DaemonUnavailable, rpc.RemoteError, OSError):
            if self.link.connected:
                await self.link.call("stop", {})
        if not await asyncio.to_thread(daemon_client.wait_for_exit):
            raise UserFacingError(f"banked: the daemon did not exit; see {paths.log_dir()}")
        await self.link.ensure()
        info = await self.link.call("ping", {})
        self.spawn(self.warm())
        return {"pid": info.get("pid")}

    def apply_settings(self, raw: Any) -> None:
        old = self.settings
        self.settings = old.updated(raw)
        self.link.autostart = self.settings.autostart
        if self.settings.socket != old.socket:
            if self.settings.socket:
                os.environ["BANKED_SOCKET"] = str(Path(self.settings.socket).expanduser())
            else:
                os.environ.pop("BANKED_SOCKET", None)
            self.spawn(self.link.close())
        self.publish_status()


class UserFacingError(Exception):
    """Shown to the user as the request's error; the message says what to do."""


Handler = Callable[..., Awaitable[Any]]


server = BankedServer()


# -- lifecycle -------------------------------------------------------------------------------


@server.feature(types.INITIALIZE)
def on_initialize(ls: BankedServer, params: types.InitializeParams) -> None:
    ls.apply_settings(params.initialization_options)


@server.feature(types.INITIALIZED)
def on_initialized(ls: BankedServer, params: types.InitializedParams) -> None:
    async def start() -> None:
        try:
            await ls.warm()
        except (DaemonUnavailable, rpc.RemoteError, asyncio.CancelledError) as exc:
            log.info("warm-up: %s", exc)

    ls.spawn(start())
    ls.spawn(ls.poll_status())


@server.feature(types.SHUTDOWN)
async def on_shutdown(ls: BankedServer, params: None) -> None:
    for task in list(ls.background):
        task.cancel()
    await ls.link.close()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def on_configuration(ls: BankedServer, params: types.DidChangeConfigurationParams) -> None:
    ls.apply_settings(params.settings)


# -- documents -------------------------------------------------------------------------------


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def on_open(ls: BankedServer, params: types.DidOpenTextDocumentParams) -> None:
    path = ls.path_of(params.text_document.uri)
    if path is None:
        return
    try:
        same = path.read_text(encoding="utf-8") == params.text_document.text
    except (OSError, UnicodeDecodeError):
        same = False  # a new, never-saved file
    if not same:  # opened with unsaved contents (a restored session, a new file)
        ls.schedule_overlay(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def on_change(ls: BankedServer, params: types.DidChangeTextDocumentParams) -> None:
    ls.supersede(params.text_document.uri)
    ls.schedule_overlay(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def on_close(ls: BankedServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.supersede(params.text_document.uri)
    ls.send_overlay(params.text_document.uri, closed=True)


# -- completion ------------------------------------------------------------------------------


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def on_inline_completion(
    ls: BankedServer, params: types.InlineCompletionParams
) -> types.InlineCompletionList | None:
    invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
    found = await ls.complete(params.text_document.uri, params.position, invoked)
    if found is None:
        return types.InlineCompletionList(items=[])
    insert, rng = found
    return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=insert, range=rng)])


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "(", " "]))
async def on_completion(ls: BankedServer, params: types.CompletionParams) -> types.CompletionList:
    """For clients without inline completion: one item with the whole (multi-line) suggestion."""
    invoked = params.context is None or params.context.trigger_kind == types.CompletionTriggerKind.Invoked
    found = await ls.complete(params.text_document.uri, params.position, invoked)
    if found is None:
        return types.CompletionList(is_incomplete=True, items=[])
    insert, rng = found
    item = types.CompletionItem(
        label=text.label_for(insert),
        kind=types.CompletionItemKind.Snippet,
        detail="banked",
        documentation=_documentation(ls, insert),
        text_edit=types.TextEdit(range=rng, new_text=insert),
        insert_text_format=types.InsertTextFormat.PlainText,
        filter_text="",
        sort_text="0",
        preselect=True,
    )
    return types.CompletionList(is_incomplete=True, items=[item])


def _documentation(ls: BankedServer, insert: str) -> types.MarkupContent | str:
    cap = ls.client_capabilities.text_document
    item = cap.completion.completion_item if cap and cap.completion else None
    if item and item.documentation_format and types.MarkupKind.Markdown in item.documentation_format:
        return types.MarkupContent(kind=types.MarkupKind.Markdown, value=f"```\n{insert}\n```")
    return insert


# -- code actions ----------------------------------------------------------------------------


@server.feature(
    types.TEXT_DOCUMENT_CODE_ACTION,
    types.CodeActionOptions(
        code_action_kinds=[KIND_EXPLAIN, KIND_REFACTOR, KIND_DOCSTRING, KIND_TESTS], resolve_provider=True
    ),
)
def on_code_action(ls: BankedServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    """Offered instantly; the model runs only when one is picked (codeAction/resolve, or its command)."""
    uri = params.text_document.uri
    if ls.path_of(uri) is None:
        return []
    where = {"uri": uri, "range": ls.protocol._converter.unstructure(params.range)}
    cap = ls.client_capabilities.text_document
    lazy = bool(cap and cap.code_action and cap.code_action.resolve_support)
    actions = []
    for action, title, kind in ACTIONS:
        act = types.CodeAction(title=title, kind=kind, data={"action": action, **where})
        actions.append(act if lazy else _resolve_to_command(act))
    return actions


ACTIONS = [
    ("explain", "banked: Explain", KIND_EXPLAIN),
    ("refactor", "banked: Refactor…", KIND_REFACTOR),
    ("docstring", "banked: Add docstring", KIND_DOCSTRING),
    ("tests", "banked: Write tests", KIND_TESTS),
]
DOCSTRING_INSTRUCTION = (
    "Add a docstring (or doc comment) to each function and class that lacks one, in the language's usual style; "
    "change nothing else"
)


def _resolve_to_command(action: types.CodeAction) -> types.CodeAction:
    """The command that does an action's work when run (for clients without codeAction/resolve)."""
    data = dict(action.data) if isinstance(action.data, dict) else {}
    kind = data.pop("action", None)
    if kind == "explain":
        action.command = types.Command(title=action.title, command="banked.explain", arguments=[data])
    elif kind == "refactor":
        action.command = types.Command(title=action.title, command="banked.refactor", arguments=[data])
    elif kind == "docstring":
        args = {**data, "instruction": DOCSTRING_INSTRUCTION}
        action.command = types.Command(title=action.title, command="banked.refactor", arguments=[args])
    elif kind == "tests":
        action.command = types.Command(title=action.title, command="banked.writeTests", arguments=[data])
    return action


@server.feature(types.CODE_ACTION_RESOLVE)
async def on_code_action_resolve(ls: BankedServer, action: types.CodeAction) -> types.CodeAction:
    """Edits are computed here (the model runs now); explain and refactor resolve to their commands."""
    data = action.data if isinstance(action.data, dict) else {}
    uri, rng = data.get("uri"), _range(data.get("range"))
    if not isinstance(uri, str):
        return action
    try:
        if data.get("action") == "docstring":
            action.edit, _ = await ls.refactor_edit(uri, rng, DOCSTRING_INSTRUCTION)
        elif data.get("action") == "tests":
            action.edit = await ls.tests_edit(uri, rng)
        else:
            action = _resolve_to_command(action)
    except UserFacingError as exc:
        raise _lsp_error(exc) from exc
    return action


# -- commands (the command palette) ----------------------------------------------------------


def _range(raw: Any) -> types.Range | None:
    if not isinstance(raw, dict):
        return None
    try:
        return types.Range(
            start=types.Position(line=int(raw["start"]["line"]), character=int(raw["start"]["character"])),
            end=types.Position(line=int(raw["end"]["line"]), character=int(raw["end"]["character"])),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _target(args: Any) -> tuple[str, types.Range | None, dict[str, Any]]:
    arg = args[0] if isinstance(args, list | tuple) and args else args
    if not isinstance(arg, dict) or not isinstance(arg.get("uri"), str):
        raise UserFacingError("banked: pass {uri, range} (the file and selection) to this command")
    return arg["uri"], _range(arg.get("range")), arg


def _lsp_error(exc: Exception) -> Exception:
    return JsonRpcException(str(exc), code=-32803)  # LSP's RequestFailed: the editor shows the message


def command(name: str) -> Callable[[Handler], Handler]:
    """Register a palette command whose failures reach the editor as a readable error."""

    def wrap(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def run(ls: BankedServer, *args: Any) -> Any:
            try:
                return await fn(ls, *args)
            except (UserFacingError, DaemonUnavailable, rpc.RemoteError) as exc:
                raise _lsp_error(exc) from exc

        server.command(name)(run)
        return fn

    return wrap


@command("banked.explain")
async def cmd_explain(ls: BankedServer, *args: Any) -> Any:
    uri, rng, _ = _target(args)
    return await ls.explain(uri, rng)


@command("banked.refactor")
async def cmd_refactor(ls: BankedServer, *args: Any) -> Any:
    uri, rng, arg = _target(args)
    instruction = arg.get("instruction") or await ls.ask_instruction()
    if not instruction:
        return {"applied": False, "reason": "no instruction"}
    edit, result = await ls.refactor_edit(uri, rng, str(instruction))
    applied = await ls.apply(edit, "banked: refactor")
    return {"applied": applied, "start_line": result["start_line"], "end_line": result["end_line"]}


@command("banked.writeTests")
async def cmd_write_tests(ls: BankedServer, *args: Any) -> Any:
    uri, rng, _ = _target(args)
    return {"applied": await ls.apply(await ls.tests_edit(uri, rng), "banked: write tests")}


@command("banked.warmWorkspace")
async def cmd_warm(ls: BankedServer, *args: Any) -> Any:
    return await ls.warm()


@server.command("banked.status")
async def cmd_status(ls: BankedServer, *args: Any) -> dict[str, Any]:
    try:
        ls.last_status = await ls.link.call("status", {})
    except (DaemonUnavailable, rpc.RemoteError) as exc:
        return {"state": ls.state, "detail": str(exc), "enabled": ls.settings.enabled}
    ls.publish_status()
    return {"state": ls.state, "enabled": ls.settings.enabled, "daemon": ls.last_status}


@command("banked.restartDaemon")
async def cmd_restart(ls: BankedServer, *args: Any) -> Any:
    return await ls.restart_daemon()


@server.command("banked.toggleCompletions")
def cmd_toggle(ls: BankedServer, *args: Any) -> dict[str, Any]:
    ls.apply_settings({"enabled": not ls.settings.enabled})
    return {"enabled": ls.settings.enabled}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="banked-lsp", description="The banked language server (stdio).")
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--stdio", action="store_true", help="talk LSP on stdin/stdout (the default)")
    parser.parse_args()
    level = logging.DEBUG if os.environ.get("BANKED_DEBUG") else logging.INFO
    logging.basicConfig(
        level=level,
        filename=str(paths.private_file(paths.log_dir() / "lsp.log")),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    # pygls logs every message at INFO, buffer contents included: never on disk unless debugging.
    logging.getLogger("pygls").setLevel(level if os.environ.get("BANKED_DEBUG") else logging.WARNING)
    server.start_io()
