"""A real LSP client (pytest-lsp) driving the real `banked-lsp`, which talks to a real daemon."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

SOURCE = "import math\n\n\ndef area(r):\n    return math.pi * r * r\n\n\ndef circumference(r):\n    return \n"


def capabilities(inline: bool = True) -> types.ClientCapabilities:
    return types.ClientCapabilities(
        window=types.WindowClientCapabilities(
            work_done_progress=True, show_document=types.ShowDocumentClientCapabilities(support=True)
        ),
        workspace=types.WorkspaceClientCapabilities(
            apply_edit=True,
            workspace_edit=types.WorkspaceEditClientCapabilities(
                document_changes=True, resource_operations=[types.ResourceOperationKind.Create]
            ),
        ),
        text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities() if inline else None,
            completion=types.CompletionClientCapabilities(),
            code_action=types.CodeActionClientCapabilities(
                resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"])
            ),
        ),
    )


class Editor:
    """What an editor keeps: open documents with versions, and the edits the server applied."""

    def __init__(self, client: LanguageClient):
        self.client = client
        self.versions: dict[str, int] = {}
        self.applied: list[types.WorkspaceEdit] = []
        self.statuses: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.message_requests: list[types.ShowMessageRequestParams] = []
        self.initialized: types.InitializeResult | None = None  # what the server answered to initialize

        @client.feature(types.WORKSPACE_APPLY_EDIT)
        def apply_edit(_c: LanguageClient, params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
            self.applied.append(params.edit)
            return types.ApplyWorkspaceEditResult(applied=True)

        @client.feature(types.WINDOW_SHOW_MESSAGE_REQUEST)
        def ask(_c: LanguageClient, params: types.ShowMessageRequestParams) -> types.MessageActionItem | None:
            self.message_requests.append(params)
            return params.actions[0] if params.actions else None

        @client.feature("banked/status")
        def status(_c: LanguageClient, params: Any) -> None:
            self.statuses.append(_plain(params))

        @client.feature("banked/metrics")
        def metrics(_c: LanguageClient, params: Any) -> None:
            self.metrics.append(_plain(params))

    def open(self, path: Path, text: str | None = None, language: str = "python") -> str:
        uri = path.as_uri()
        self.versions[uri] = 1
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id=language, version=1, text=path.read_text() if text is None else text
                )
            )
        )
        return uri

    def type(self, uri: str, line: int, character: int, typed: str) -> None:
        """An incremental change inserting `typed` at (line, character)."""
        self.versions[uri] += 1
        pos = types.Position(line=line, character=character)
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]),
                content_changes=[
                    types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=typed)
                ],
            )
        )

    def delete(self, uri: str, line: int, character: int, n: int) -> None:
        """An incremental change deleting `n` characters at (line, character), as a backspace after them does."""
        self.versions[uri] += 1
        rng = types.Range(
            start=types.Position(line=line, character=character),
            end=types.Position(line=line, character=character + n),
        )
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]),
                content_changes=[types.TextDocumentContentChangePartial(range=rng, text="")],
            )
        )

    def inline(self, uri: str, line: int, character: int, invoked: bool = True) -> asyncio.Future[Any]:
        kind = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
        return asyncio.ensure_future(
            self.client.text_document_inline_completion_async(
                types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(uri=uri),
                    position=types.Position(line=line, character=character),
                    context=types.InlineCompletionContext(trigger_kind=kind),
                )
            )
        )

    async def wait_for(self, what: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while not (found := what()):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the editor never saw what it waited for")
            await asyncio.sleep(0.05)
        return found


def _plain(params: Any) -> dict[str, Any]:
    if isinstance(params, dict):
        return params
    return {k: getattr(params, k) for k in dir(params) if not k.startswith("_")}


async def start_lsp(
    env: dict[str, str], root: Path, inline: bool = True, options: dict[str, Any] | None = None
) -> tuple[LanguageClient, Editor]:
    config = ClientServerConfig(server_command=[sys.executable, "-m", "banked.lsp"], server_env={**os.environ, **env})
    client = await config.start()
    editor = Editor(client)
    editor.initialized = await client.initialize_session(
        types.InitializeParams(
            capabilities=capabilities(inline),
            root_uri=root.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name=root.name)],
            initialization_options={"banked": {"debounceMs": 0, **(options or {})}},
        )
    )
    return client, editor
