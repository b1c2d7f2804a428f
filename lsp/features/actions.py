"""Explain, refactor, add docstrings and write tests: as code actions (offered instantly, the model runs only
when one is picked) and as palette commands.

Explanations stream as work-done progress and open as a markdown document;
refactors arrive as a `workspace/applyEdit` (one undo step); tests go to the
language's test file, created or appended.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from banked.daemon import paths
from banked.daemon.ipc import protocol, rpc
from banked.daemon.ipc.client import DaemonUnavailable
from banked.lsp import text
from banked.lsp.progress import progress
from lsprotocol import types
from lsprotocol.converters import get_converter
from pygls import uris
from pygls.capabilities import get_capability
from pygls.workspace import TextDocument

if TYPE_CHECKING:
    from banked.lsp.server import BankedServer

KIND_EXPLAIN = "refactor.banked.explain"
KIND_REFACTOR = "refactor.rewrite.banked"
KIND_DOCSTRING = "refactor.rewrite.banked.docstring"
KIND_TESTS = "source.banked.tests"
KINDS = [KIND_EXPLAIN, KIND_REFACTOR, KIND_DOCSTRING, KIND_TESTS]
ACTIONS = [
    ("explain", "banked: Explain", KIND_EXPLAIN),
    ("refactor", "banked: Refactor…", KIND_REFACTOR),
    ("docstring", "banked: Add docstring", KIND_DOCSTRING),
    ("tests", "banked: Write tests", KIND_TESTS),
]
R = TypeVar("R", bound=protocol.ChatResult)


class UserFacingError(Exception):
    """Shown to the user as the request's error; the message says what to do."""


class Actions:
    def __init__(self, ls: BankedServer):
        self.ls = ls
        self.converter = get_converter()

    # -- code actions ------------------------------------------------------------------------

    def offer(self, params: types.CodeActionParams) -> list[types.CodeAction]:
        uri = params.text_document.uri
        if self.ls.documents.path_of(uri) is None:
            return []
        where = {"uri": uri, "range": self.converter.unstructure(params.range)}
        lazy = get_capability(self.ls.client_capabilities, "text_document.code_action.resolve_support", None)
        actions = []
        for action, title, kind in ACTIONS:
            act = types.CodeAction(title=title, kind=kind, data={"action": action, **where})
            actions.append(act if lazy else as_command(act))
        return actions

    async def resolve(self, action: types.CodeAction) -> types.CodeAction:
        """Edits are computed here (the model runs now); explain and refactor resolve to their commands."""
        data = action.data if isinstance(action.data, dict) else {}
        uri, rng = data.get("uri"), parse_range(data.get("range"))
        if not isinstance(uri, str):
            return action
        if data.get("action") == "docstring":
            action.edit, _ = await self.refactor_edit(uri, rng, preset=protocol.Preset.DOCSTRING)
        elif data.get("action") == "tests":
            action.edit = await self.tests_edit(uri, rng)
        else:
            action = as_command(action)
        return action

    # -- the model's work --------------------------------------------------------------------

    def selection(self, uri: str, rng: types.Range | None) -> tuple[TextDocument, Path, dict[str, int]]:
        """The document, its path, and the lines to work on (none selected: the daemon takes the code around
        the cursor, the enclosing definition where it knows the language)."""
        doc = self.ls.workspace.get_text_document(uri)
        path = self.ls.documents.path_of(uri)
        if path is None:
            raise UserFacingError("banked works on files on disk; save this buffer first")
        if rng is None or rng.start == rng.end:
            return doc, path, {"cursor_line": rng.start.line if rng else 0}
        start, end = text.selected_lines(rng)
        return doc, path, {"start_line": start, "end_line": end}

    async def chat(
        self, method: protocol.Method[Any, R], title: str, uri: str, rng: types.Range | None, **extra: Any
    ) -> tuple[TextDocument, R]:
        doc, path, lines = self.selection(uri, rng)
        version = doc.version
        params = method.params(
            path=str(path), text=doc.source, workspace=self.ls.documents.root_of(path), **lines, **extra
        )
        async with progress(self.ls, title) as p:
            streamed: list[str] = []

            def on_text(_method: str, note: dict[str, Any]) -> None:
                streamed.append(str(note.get("text", "")))
                p.report(" ".join("".join(streamed).split()[-8:]))

            try:
                result = await self.ls.link.request(method, params, on_text)
            except (rpc.RemoteError, DaemonUnavailable) as exc:
                raise UserFacingError(f"banked: {exc}") from exc
        if doc.version != version:
            raise UserFacingError("banked: the file changed while the model was working; try again")
        return doc, result

    async def explain(self, uri: str, rng: types.Range | None) -> dict[str, Any]:
        _, result = await self.chat(protocol.EXPLAIN, "banked: explaining", uri, rng)
        rel, a, b = result.path, result.start_line, result.end_line
        out_dir = paths.private_dir(paths.cache_dir() / "explanations")
        md = out_dir / f"{rel.replace('/', '_')}-L{a}-{b}.md"
        md.write_text(f"# {rel}, lines {a}–{b}\n\n{result.text.strip()}\n", encoding="utf-8")
        md_uri = uris.from_fs_path(str(md)) or md.as_uri()
        with contextlib.suppress(Exception):
            await self.ls.window_show_document_async(types.ShowDocumentParams(uri=md_uri, take_focus=True))
        return {"text": result.text, "uri": md_uri, "path": rel, "start_line": a, "end_line": b}

    async def refactor_edit(
        self, uri: str, rng: types.Range | None, instruction: str | None = None, preset: protocol.Preset | None = None
    ) -> tuple[types.WorkspaceEdit, protocol.RefactorResult]:
        doc, result = await self.chat(
            protocol.REFACTOR, "banked: refactoring", uri, rng, instruction=instruction, preset=preset
        )
        edit = text.replace_lines_edit(doc.source, result.start_line, result.end_line, result.replacement)
        ident = types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=doc.version)
        return types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(text_document=ident, edits=[edit])]), result

    async def tests_edit(self, uri: str, rng: types.Range | None) -> types.WorkspaceEdit:
        _, result = await self.chat(protocol.WRITE_TESTS, "banked: writing tests", uri, rng)
        path = self.ls.documents.path_of(uri)
        assert path is not None
        target = Path(text.test_file_for(str(path)))
        target_uri = uris.from_fs_path(str(target)) or target.as_uri()
        open_doc = self.ls.workspace.text_documents.get(target_uri)
        if open_doc is not None or target.exists():
            current = open_doc.source if open_doc else target.read_text(encoding="utf-8")
            ident = types.OptionalVersionedTextDocumentIdentifier(
                uri=target_uri, version=open_doc.version if open_doc else None
            )
            edits: list[Any] = [
                types.TextDocumentEdit(text_document=ident, edits=[text.append_edit(current, result.code)])
            ]
        else:
            start = types.Position(line=0, character=0)
            edits = [
                types.CreateFile(uri=target_uri, options=types.CreateFileOptions(ignore_if_exists=True)),
                types.TextDocumentEdit(
                    text_document=types.OptionalVersionedTextDocumentIdentifier(uri=target_uri, version=None),
                    edits=[types.TextEdit(range=types.Range(start=start, end=start), new_text=result.code)],
                ),
            ]
        return types.WorkspaceEdit(document_changes=edits)

    async def apply(self, edit: types.WorkspaceEdit, label: str) -> bool:
        result = await self.ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=edit, label=label))
        if not result.applied:
            raise UserFacingError(f"banked: the editor did not apply the edit ({result.failure_reason or 'refused'})")
        return True

    async def ask_preset(self) -> protocol.Preset | None:
        """Clients without an input box get preset instructions (VS Code and Neovim ask for free text)."""
        choices = [p for p in protocol.Preset if p is not protocol.Preset.DOCSTRING]
        choice = await self.ls.window_show_message_request_async(
            types.ShowMessageRequestParams(
                type=types.MessageType.Info,
                message="banked: refactor how?",
                actions=[types.MessageActionItem(title=p.value) for p in choices],
            )
        )
        return protocol.Preset(choice.title) if choice else None


def as_command(action: types.CodeAction) -> types.CodeAction:
    """The command that does an action's work when run (for clients without codeAction/resolve)."""
    data = dict(action.data) if isinstance(action.data, dict) else {}
    kind = data.pop("action", None)
    commands: dict[str | None, Callable[[], types.Command]] = {
        "explain": lambda: types.Command(title=action.title, command="banked.explain", arguments=[data]),
        "refactor": lambda: types.Command(title=action.title, command="banked.refactor", arguments=[data]),
        "docstring": lambda: types.Command(
            title=action.title, command="banked.refactor", arguments=[{**data, "preset": protocol.Preset.DOCSTRING}]
        ),
        "tests": lambda: types.Command(title=action.title, command="banked.writeTests", arguments=[data]),
    }
    if kind in commands:
        action.command = commands[kind]()
    return action


def parse_range(raw: Any) -> types.Range | None:
    if not isinstance(raw, dict):
        return None
    try:
        return types.Range(
            start=types.Position(line=int(raw["start"]["line"]), character=int(raw["start"]["character"])),
            end=types.Position(line=int(raw["end"]["line"]), character=int(raw["end"]["character"])),
        )
    except (KeyError, TypeError, ValueError):
        return None


def command_target(args: Any) -> tuple[str, types.Range | None, dict[str, Any]]:
    arg = args[0] if isinstance(args, list | tuple) and args else args
    if not isinstance(arg, dict) or not isinstance(arg.get("uri"), str):
        raise UserFacingError("banked: pass {uri, range} (the file and selection) to this command")
    return arg["uri"], parse_range(arg.get("range")), arg
