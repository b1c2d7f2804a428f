"""End to end: a pytest-lsp client, the real `banked-lsp`, a real daemon with a tiny GGUF model."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from banked.daemon.ipc.client import Client, daemon_alive, wait_for_exit
from helpers import DaemonProc, make_files
from lsp_helpers import SOURCE, Editor, start_lsp
from lsprotocol import types
from pytest_lsp import LanguageClient

pytestmark = pytest.mark.asyncio(loop_scope="function")

FILES = {
    "geometry.py": SOURCE,
    "units.py": "CM_PER_INCH = 2.54\n\n\ndef to_cm(inches):\n    return inches * CM_PER_INCH\n",
}


@pytest.fixture
def lsp_env(banked_env: dict[str, str]) -> dict[str, str]:
    return {**banked_env, "BANKED_MAX_TOKENS": "12", "BANKED_CHAT_MAX_TOKENS": "24"}


@pytest.fixture
def daemon(lsp_env: dict[str, str]) -> Iterator[DaemonProc]:
    """The daemon with the same settings as one the LSP would auto-start."""
    d = DaemonProc({**os.environ, **lsp_env}, Path(lsp_env["BANKED_RUNTIME_DIR"]) / "daemon.sock").start()
    yield d
    d.stop()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return make_files(tmp_path / "ws", FILES)


@pytest_asyncio.fixture
async def session(
    lsp_env: dict[str, str], daemon: DaemonProc, ws: Path
) -> AsyncIterator[tuple[LanguageClient, Editor]]:
    client, editor = await start_lsp(lsp_env, ws)
    yield client, editor
    await client.shutdown_session()
    await client.stop()


async def inline_text(editor: Editor, uri: str, line: int, col: int) -> str:
    result = await editor.inline(uri, line, col)
    assert isinstance(result, types.InlineCompletionList)
    return result.items[0].insert_text if result.items else ""  # type: ignore[return-value]


async def test_inline_completion_returns_text_at_the_cursor(session: tuple[LanguageClient, Editor], ws: Path) -> None:
    client, editor = session
    await client.workspace_execute_command_async(types.ExecuteCommandParams(command="banked.warmWorkspace"))
    uri = editor.open(ws / "geometry.py")
    result = await editor.inline(uri, 8, 11)
    assert isinstance(result, types.InlineCompletionList) and len(result.items) == 1
    item = result.items[0]
    assert isinstance(item.insert_text, str) and item.insert_text.strip()
    assert "\n" not in item.insert_text  # mid-line: the rest of this line only
    assert item.range == types.Range(
        start=types.Position(line=8, character=11), end=types.Position(line=8, character=11)
    )
    # The same request through the daemon directly gives the same text: the LSP adds nothing and loses nothing.
    with Client.connect(Path(os.environ["BANKED_RUNTIME_DIR"]) / "daemon.sock") as c:
        direct = c.call("complete", {"path": str(ws / "geometry.py"), "line": 8, "col": 11})
    assert direct["text"] == item.insert_text


async def test_unsaved_edits_change_the_completion(session: tuple[LanguageClient, Editor], ws: Path) -> None:
    _client, editor = session
    uri = editor.open(ws / "geometry.py")
    before = await inline_text(editor, uri, 8, 11)
    editor.type(uri, 8, 11, "2 * math.")  # not saved: the file on disk is unchanged
    after = await inline_text(editor, uri, 8, 20)
    assert (ws / "geometry.py").read_text() == SOURCE
    assert after and after != before


def jobs(daemon: DaemonProc) -> dict[str, int]:
    with daemon.client() as c:
        return dict(c.call("status")["jobs"])


async def until_running(daemon: DaemonProc, prefix: str = "complete") -> None:
    """Return as soon as the daemon is running a job named `prefix`…"""
    with daemon.client() as c:
        for _ in range(2000):
            if str(c.call("status")["running_job"] or "").startswith(prefix):
                return
            await asyncio.sleep(0.002)
    raise AssertionError(f"the daemon never ran a {prefix} job")


async def settle(daemon: DaemonProc) -> dict[str, Any]:
    """The daemon's status once no job is queued or running (or the last status after 10 s)."""
    with daemon.client() as c:
        for _ in range(200):
            st: dict[str, Any] = c.call("status")
            if st["pending_jobs"] == 0:
                break
            await asyncio.sleep(0.05)
    return st


async def test_typing_and_cancel_requests_cancel_the_daemon_job(lsp_env: dict[str, str], ws: Path) -> None:
    """Without reuse (today's behaviour before it): a keystroke or a $/cancelRequest cancels the daemon job."""
    # Long completions (up to 3,000 tokens, no line limit) so each is still running when cancelled.
    env = {**lsp_env, "BANKED_MAX_TOKENS": "3000"}
    daemon = DaemonProc({**os.environ, **env}, Path(env["BANKED_RUNTIME_DIR"]) / "daemon.sock").start()
    client, editor = await start_lsp(env, ws, options={"maxLines": 1000, "reuse": False})
    try:
        uri = editor.open(ws / "geometry.py")
        await inline_text(editor, uri, 8, 11)
        await settle(daemon)
        before = jobs(daemon)

        first = editor.inline(uri, 8, 11)
        await until_running(daemon)
        editor.type(uri, 8, 11, "r")  # typing makes the running completion stale
        r1 = await first
        assert isinstance(r1, types.InlineCompletionList) and not r1.items  # never shown
        await settle(daemon)  # the first job has stopped: what runs next is the second request's

        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=8, character=12),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        )
        second = asyncio.ensure_future(
            client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="k2")
        )
        await until_running(daemon)
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="k2"))
        with pytest.raises(Exception, match="cancel"):
            await second

        st = await settle(daemon)
        assert st["pending_jobs"] == 0, "a daemon job outlived the requests that wanted it"
        after = st["jobs"]
        assert after.get("complete.cancelled", 0) - before.get("complete.cancelled", 0) == 2
        assert after.get("complete.done", 0) == before.get("complete.done", 0)
    finally:
        await client.shutdown_session()
        await client.stop()
        daemon.stop()


async def test_code_action_resolves_into_an_edit_and_refactor_applies_one(
    session: tuple[LanguageClient, Editor], ws: Path
) -> None:
    client, editor = session
    uri = editor.open(ws / "units.py")
    rng = types.Range(start=types.Position(line=3, character=0), end=types.Position(line=5, character=0))
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=rng,
            context=types.CodeActionContext(diagnostics=[]),
        )
    )
    assert actions is not None
    titles = {a.title: a for a in actions if isinstance(a, types.CodeAction)}
    assert set(titles) == {"banked: Explain", "banked: Refactor…", "banked: Add docstring", "banked: Write tests"}
    docstring = titles["banked: Add docstring"]
    assert docstring.edit is None  # nothing ran yet: the model runs only when picked
    resolved = await client.code_action_resolve_async(docstring)
    assert resolved.edit is not None and resolved.edit.document_changes
    change = resolved.edit.document_changes[0]
    assert isinstance(change, types.TextDocumentEdit) and change.text_document.uri == uri
    edit = change.edits[0]
    assert isinstance(edit, types.TextEdit)
    assert edit.range.start == types.Position(line=3, character=0)
    assert edit.range.end == types.Position(line=5, character=0)

    tests = await client.code_action_resolve_async(titles["banked: Write tests"])
    assert tests.edit is not None and tests.edit.document_changes
    created = tests.edit.document_changes[0]
    assert isinstance(created, types.CreateFile) and created.uri == (ws / "test_units.py").as_uri()

    refactor = (await client.code_action_resolve_async(titles["banked: Refactor…"])).command
    assert refactor is not None and refactor.command == "banked.refactor"
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(
            command=refactor.command, arguments=[{**refactor.arguments[0], "instruction": "rename to inches_to_cm"}]
        )
    )
    assert result["applied"] is True
    assert len(editor.applied) == 1
    applied = editor.applied[0].document_changes[0]
    assert isinstance(applied, types.TextDocumentEdit) and applied.text_document.uri == uri
    # Without an instruction, a client with no input box is offered presets.
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(
            command="banked.refactor", arguments=[{"uri": uri, "range": refactor.arguments[0]["range"]}]
        )
    )
    assert result["applied"] is True and editor.message_requests


async def test_explain_streams_progress_and_opens_a_markdown_document(
    session: tuple[LanguageClient, Editor], ws: Path
) -> None:
    client, editor = session
    uri = editor.open(ws / "units.py")
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="banked.explain", arguments=[{"uri": uri}])  # no range: the block
    )
    assert result["start_line"] == 1 and result["end_line"] == 1  # the first top-level block: the constant
    assert client.shown_documents and client.shown_documents[-1].uri == result["uri"]
    md = Path(result["uri"].removeprefix("file://"))
    assert md.suffix == ".md" and result["text"].strip() in md.read_text()
    kinds = [type(v).__name__ for reports in client.progress_reports.values() for v in reports]
    assert "WorkDoneProgressBegin" in kinds and "WorkDoneProgressEnd" in kinds


async def test_commands_warm_status_toggle(session: tuple[LanguageClient, Editor], ws: Path) -> None:
    client, editor = session
    warmed = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="banked.warmWorkspace"))
    assert warmed[0]["root"] == str(ws.resolve()) and warmed[0]["files"] == 2
    status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="banked.status"))
    assert status["state"] == "connected" and status["daemon"]["engine"]["name"] == "llamacpp"
    await editor.wait_for(lambda: any(s.get("state") == "connected" for s in editor.statuses))
    toggled = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="banked.toggleCompletions")
    )
    assert toggled == {"enabled": False}
    uri = editor.open(ws / "geometry.py")
    assert not (await editor.inline(uri, 8, 11)).items  # type: ignore[union-attr]
    await editor.wait_for(lambda: any(s.get("enabled") is False for s in editor.statuses))
    # Per-language settings through didChangeConfiguration.
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"banked": {"enabled": True, "languages": {"python": False}}})
    )
    await asyncio.sleep(0.2)
    assert not (await editor.inline(uri, 8, 11)).items  # type: ignore[union-attr]
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"banked": {"languages": {"python": True}}})
    )
    await asyncio.sleep(0.2)
    assert (await editor.inline(uri, 8, 11)).items  # type: ignore[union-attr]


async def test_the_server_survives_a_daemon_kill_and_reconnects(
    lsp_env: dict[str, str], daemon: DaemonProc, ws: Path
) -> None:
    client, editor = await start_lsp(lsp_env, ws)
    try:
        uri = editor.open(ws / "geometry.py")
        editor.type(uri, 8, 11, "2 * ")  # unsaved: must reach the restarted daemon too
        warm = types.ExecuteCommandParams(command="banked.warmWorkspace")
        await client.workspace_execute_command_async(warm)
        first = await inline_text(editor, uri, 8, 15)
        assert first
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait()
        await editor.wait_for(lambda: any(s.get("state") == "disconnected" for s in editor.statuses))
        # The next completion starts a fresh daemon (auto-start) and answers; once warm, exactly as before.
        assert await inline_text(editor, uri, 8, 15)
        await client.workspace_execute_command_async(warm)
        assert await inline_text(editor, uri, 8, 15) == first
        assert not [m for m in client.messages if m.type == types.MessageType.Error]
        await editor.wait_for(lambda: editor.statuses[-1].get("state") == "connected")
    finally:
        await client.shutdown_session()
        await client.stop()
        with Client.connect(daemon.sock) as c:  # the daemon the LSP started
            c.call("stop")


async def test_a_client_without_inline_completion_gets_classic_items(
    lsp_env: dict[str, str], daemon: DaemonProc, ws: Path
) -> None:
    client, editor = await start_lsp(lsp_env, ws, inline=False, options={"maxLines": 3})
    try:
        uri = editor.open(ws / "geometry.py", SOURCE + "\n\ndef volume(r):\n")
        result = await client.text_document_completion_async(
            types.CompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=11, character=0)
            )
        )
        assert isinstance(result, types.CompletionList) and result.is_incomplete
        assert len(result.items) == 1
        item = result.items[0]
        assert isinstance(item.text_edit, types.TextEdit) and item.text_edit.new_text.strip()
        assert item.text_edit.new_text.count("\n") <= 2  # maxLines from the settings reached the daemon
        assert item.text_edit.range.start == types.Position(line=11, character=0)
        assert editor.initialized is not None and editor.initialized.capabilities.completion_provider is not None
    finally:
        await client.shutdown_session()
        await client.stop()


async def test_a_client_with_inline_completion_is_not_offered_the_classic_menu(
    session: tuple[LanguageClient, Editor],
) -> None:
    """Offered both, editors fire both on each keystroke and the newer request cancels the other."""
    _client, editor = session
    assert editor.initialized is not None
    assert editor.initialized.capabilities.inline_completion_provider is not None
    assert editor.initialized.capabilities.completion_provider is None


async def a_suggestion(editor: Editor, uri: str, line: int, col: int) -> str:
    text = await inline_text(editor, uri, line, col)
    assert text.strip() and "\n" not in text, "the tiny model gave no one-line suggestion here"
    return text


async def test_typing_through_a_suggestion_needs_no_model_call(
    session: tuple[LanguageClient, Editor], daemon: DaemonProc, ws: Path
) -> None:
    _client, editor = session
    uri = editor.open(ws / "geometry.py")
    shown = await a_suggestion(editor, uri, 8, 11)
    await settle(daemon)
    before = jobs(daemon)
    col = 11
    for ch in shown[:3]:  # the user types what the ghost text shows: the rest stays, without the model
        editor.type(uri, 8, col, ch)
        col += 1
        assert await inline_text(editor, uri, 8, col) == shown[col - 11 :]
    for _ in range(2):  # backspaces: the suggestion at each earlier point comes back from the cache
        col -= 1
        editor.delete(uri, 8, col, 1)
        assert await inline_text(editor, uri, 8, col) == shown[col - 11 :]
    assert jobs(daemon).get("complete.done", 0) == before.get("complete.done", 0)


async def test_a_shown_suggestion_is_never_stale(session: tuple[LanguageClient, Editor], ws: Path) -> None:
    """Typed over while the model works, a request answers nothing rather than a suggestion that no longer fits."""
    _client, editor = session
    uri = editor.open(ws / "geometry.py")
    editor.type(uri, 8, 11, "2 * ")  # text no suggestion was made for: the next request needs the model
    pending = editor.inline(uri, 8, 15)
    await asyncio.sleep(0.01)
    editor.type(uri, 8, 15, "\u00a7")  # a character the model will not have written
    r = await pending
    assert isinstance(r, types.InlineCompletionList) and not r.items


async def test_the_next_suggestion_is_ready_when_one_is_accepted(
    session: tuple[LanguageClient, Editor], daemon: DaemonProc, ws: Path
) -> None:
    """Speculation: once a suggestion is shown, the one after it is computed in the background; after a
    suggestion that ends its line, that is the next line."""
    _client, editor = session
    uri = editor.open(ws / "geometry.py")
    shown = await a_suggestion(editor, uri, 8, 11)
    await editor.wait_for(lambda: jobs(daemon).get("background.done", 0) and not jobs_pending(daemon), timeout=60)
    before = jobs(daemon)
    editor.type(uri, 8, 11, shown)  # Tab: the suggestion, which ends its line, accepted
    end = 11 + len(shown)
    nxt = await inline_text(editor, uri, 8, end)
    # The next line, computed while the user read: ghost text after a line break at the end of this line...
    assert nxt.startswith("\n") and nxt.strip(), f"no next line after the accepted one: {nxt!r}"
    editor.type(uri, 8, end, "\n")  # ...and, after Enter, the same line at the start of the new one
    assert await inline_text(editor, uri, 9, 0) == nxt[1:]
    assert jobs(daemon).get("complete.done", 0) == before.get("complete.done", 0)  # no model call for either
    assert editor.metrics == [] or editor.metrics[-1].get("cached") is not False


def jobs_pending(daemon: DaemonProc) -> int:
    with daemon.client() as c:
        return int(c.call("status")["pending_jobs"])


async def test_unsaved_buffers_become_overlays_and_closing_drops_them(
    session: tuple[LanguageClient, Editor], ws: Path, daemon: DaemonProc
) -> None:
    client, editor = session

    def overlays() -> int:
        with daemon.client() as c:
            return sum(w["overlays"] for w in c.call("status")["workspaces"])

    uri = editor.open(ws / "units.py", FILES["units.py"] + "\n\nMM_PER_INCH = 25.4\n")  # opened dirty
    await editor.wait_for(lambda: overlays() == 1, timeout=20)
    client.text_document_did_close(
        types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    await editor.wait_for(lambda: overlays() == 0, timeout=20)


async def test_a_daemon_that_cannot_start_is_reported_once_and_stopping_one_does_not_respawn_it(
    lsp_env: dict[str, str], ws: Path, tmp_path: Path
) -> None:
    # No daemon runs, and one cannot start: the model file does not exist.
    env = {**lsp_env, "BANKED_MODEL": str(tmp_path / "missing.gguf")}
    client, editor = await start_lsp(env, ws)
    try:
        uri = editor.open(ws / "geometry.py")
        for _ in range(2):
            assert not (await editor.inline(uri, 8, 11)).items  # type: ignore[union-attr]
        await asyncio.sleep(2.5)  # a status poll: it must not try to start a daemon by itself
        errors = [m for m in client.messages if m.type == types.MessageType.Error]
        assert len(errors) == 1 and "could not reach the daemon" in errors[0].message
        assert any(s.get("state") == "failed" for s in editor.statuses)
    finally:
        await client.shutdown_session()
        await client.stop()


async def test_after_banked_stop_only_a_request_starts_a_daemon_again(lsp_env: dict[str, str], ws: Path) -> None:
    """Status polling never starts a daemon (README): after a stop, the next completion does."""
    sock = Path(lsp_env["BANKED_RUNTIME_DIR"]) / "daemon.sock"
    env = {**os.environ, **lsp_env}
    client, editor = await start_lsp(lsp_env, ws)
    try:
        uri = editor.open(ws / "geometry.py")
        await editor.inline(uri, 8, 11)  # auto-starts a daemon
        assert daemon_alive(sock)
        with Client.connect(sock) as c:
            c.call("stop")
        assert await asyncio.to_thread(wait_for_exit, 60.0, sock)
        await asyncio.sleep(6.5)  # three status polls (2 s, then backing off)
        assert not daemon_alive(sock), "a status poll started a daemon"
        await editor.wait_for(lambda: any(s.get("state") == "disconnected" for s in editor.statuses))
        editor.type(uri, 8, 11, "q = ")  # new text: no cached suggestion fits it
        await editor.inline(uri, 8, 15)  # a request that needs the daemon starts one
        assert daemon_alive(sock)
    finally:
        await client.shutdown_session()
        await client.stop()
        subprocess.run([sys.executable, "-m", "banked.daemon", "stop"], env=env, capture_output=True, timeout=120)


async def test_two_windows_do_not_fight_over_the_cache_the_focused_one_is_warm(
    lsp_env: dict[str, str], daemon: DaemonProc, tmp_path: Path
) -> None:
    first, second = make_files(tmp_path / "first", FILES), make_files(tmp_path / "second", FILES)
    a_client, a = await start_lsp(lsp_env, first, options={"focused": True})
    b_client, b = await start_lsp(lsp_env, second, options={"focused": False})
    try:
        await a.wait_for(lambda: any(s.get("workspace") == str(first.resolve()) and s.get("here") for s in a.statuses))
        await b.wait_for(lambda: any(s.get("workspace") == str(first.resolve()) for s in b.statuses))
        assert b.statuses[-1]["here"] is False  # the unfocused window did not take the cache, and says so
        await b_client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="banked.focus", arguments=[{"focused": True}])
        )
        await b.wait_for(lambda: b.statuses[-1].get("workspace") == str(second.resolve()) and b.statuses[-1]["here"])
        await a.wait_for(lambda: a.statuses[-1].get("here") is False)
        # Focus that does not settle (alt-tabbing through) moves nothing.
        await a_client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="banked.focus", arguments=[{"focused": True}])
        )
        await a_client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="banked.focus", arguments=[{"focused": False}])
        )
        await asyncio.sleep(4)
        assert b.statuses[-1]["here"] is True and a.statuses[-1]["here"] is False
    finally:
        for c in (a_client, b_client):
            await c.shutdown_session()
            await c.stop()
