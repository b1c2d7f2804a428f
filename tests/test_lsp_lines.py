"""Text as it comes: the language server shows what a running model call has written at once.

The model on these machines writes a line in a second or two; the user types 4 keys a second. Here the daemon is
a double over a real Unix socket that streams a known block slowly (the layer below is tested against the
real daemon in test_lsp.py), so what the user sees, and when, can be checked exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import pytest_asyncio
from banked.daemon.ipc import protocol, rpc
from helpers import make_files
from lsp_helpers import start_lsp
from lsprotocol import types
from pytest_lsp import LanguageClient

pytestmark = pytest.mark.asyncio(loop_scope="function")

BLOCK = "x = 1\n    y = x + 1\n    return y"
PIECE_S = 0.5  # between streamed pieces (the whole block takes about 5 s): wide margins for a busy machine


class SlowDaemon:
    """Answers `complete` with BLOCK, streamed in pieces of 3 characters; every other request gets an error."""

    def __init__(self) -> None:
        self.completes = 0
        self.finished = 0  # complete calls answered in full
        self.server: asyncio.AbstractServer | None = None

    async def serve(self, sock: Path) -> None:
        self.server = await asyncio.start_unix_server(self._conn, str(sock))

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unpacker = rpc.unpacker()
        tasks: dict[int, asyncio.Task[None]] = {}
        while data := await reader.read(65536):
            unpacker.feed(data)
            for obj in unpacker:
                msg = rpc.parse(obj)
                if msg.kind == rpc.REQUEST and msg.id is not None:
                    tasks[msg.id] = asyncio.ensure_future(self._answer(writer, msg.id, msg.method or "", msg.params))
                elif msg.kind == rpc.NOTIFICATION and msg.method == protocol.CANCEL:
                    task = tasks.pop(int(msg.params.get("id", -1)), None)
                    if task is not None:
                        task.cancel()

    async def _answer(self, writer: asyncio.StreamWriter, msgid: int, method: str, params: Any) -> None:
        if method == "ping":
            writer.write(rpc.response(msgid, None, {"pid": 1, "version": "test"}))
            return
        if method != "complete":
            writer.write(rpc.response(msgid, {"code": "bad_request", "message": f"not in this test: {method}"}, None))
            return
        self.completes += 1
        for i in range(0, len(BLOCK), 3):
            await asyncio.sleep(PIECE_S)
            writer.write(rpc.notification(protocol.TEXT, {"id": msgid, "text": BLOCK[i : i + 3]}))
        result = protocol.CompleteResult(
            text=BLOCK, raw_text=BLOCK, decision="on an empty line: a block", path="f.py", workspace=params["path"],
            daemon_ms=1.0, reused_tokens=0, prefilled_tokens=0, generated_tokens=len(BLOCK) // 3, ttft_ms=1.0,
            total_ms=1.0, engine="test", model="test",
        )  # fmt: skip
        writer.write(rpc.response(msgid, None, msgpack.unpackb(rpc.pack(protocol.encode(result)))))
        self.finished += 1


async def serving(banked_env: dict[str, str], double: SlowDaemon) -> AsyncIterator[SlowDaemon]:
    run = Path(banked_env["BANKED_RUNTIME_DIR"])
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    await double.serve(run / "daemon.sock")
    yield double
    assert double.server is not None
    double.server.close()


@pytest_asyncio.fixture
async def slow(banked_env: dict[str, str]) -> AsyncIterator[SlowDaemon]:
    async for d in serving(banked_env, SlowDaemon()):
        yield d


@contextlib.asynccontextmanager
async def editing(banked_env: dict[str, str], ws: Path, **options: Any) -> AsyncIterator[tuple[LanguageClient, Any]]:
    """A real language server and client on `ws` (not autostarting a daemon: the double is the daemon)."""
    client, editor = await start_lsp(banked_env, ws, options={"autostart": False, **options})
    try:
        yield client, editor
    finally:
        with contextlib.suppress(Exception):
            await client.shutdown_session()
        await client.stop()


async def text_of(pending: asyncio.Future[Any]) -> str:
    r = await pending
    assert isinstance(r, types.InlineCompletionList)
    return str(r.items[0].insert_text) if r.items else ""


async def test_text_is_shown_before_the_call_ends_and_the_next_lines_follow_from_it(
    banked_env: dict[str, str], slow: SlowDaemon, tmp_path: Path
) -> None:
    ws = make_files(tmp_path / "ws", {"f.py": "def f():\n    \n"})
    async with editing(banked_env, ws, speculate=False) as (_client, editor):
        uri = editor.open(ws / "f.py")
        first = await text_of(editor.inline(uri, 1, 4, invoked=False))
        assert first == "x =", "what the model wrote was held back until it finished the line"
        assert slow.finished == 0
        editor.type(uri, 1, 4, first)  # Tab
        assert (
            await text_of(editor.inline(uri, 1, 7, invoked=False)) == " 1"
        )  # the rest of the line, once it is written
        editor.type(uri, 1, 7, " 1")  # Tab
        ghost = await text_of(editor.inline(uri, 1, 9, invoked=False))  # the next line, as far as it is written
        assert ghost.startswith("\n    y") and "\n    y = x + 1".startswith(ghost), ghost
        editor.type(uri, 1, 9, "\n    ")  # Enter, auto-indented
        shown = await text_of(editor.inline(uri, 2, 4, invoked=False))
        assert shown and "y = x + 1".startswith(shown), shown
        editor.type(uri, 2, 4, "y = x")  # typing through the line
        shown = await text_of(editor.inline(uri, 2, 9, invoked=False))
        assert shown and " + 1".startswith(shown), shown
        assert slow.completes == 1, "the rest of the block needed another model call"
        await editor.wait_for(lambda: slow.finished == 1, timeout=10)
        editor.type(uri, 2, 9, " + 1\n    ")
        assert await text_of(editor.inline(uri, 3, 4, invoked=False)) == "return y"  # from the finished answer
        assert slow.completes == 1


async def test_a_call_whose_words_were_shown_goes_on_when_nobody_waits_for_it(
    banked_env: dict[str, str], slow: SlowDaemon, tmp_path: Path
) -> None:
    """The user types, a word of the running call is shown, and nobody waits for the call for a moment: it
    must go on (the user reads it and may type into it), not be dropped as abandoned."""
    ws = make_files(tmp_path / "ws", {"f.py": "def f():\n    \n"})
    async with editing(banked_env, ws, speculate=False) as (_client, editor):
        uri = editor.open(ws / "f.py")
        first = editor.inline(uri, 1, 4, invoked=False)
        # The call starts after the 75 ms debounce and writes its first piece PIECE_S later: type just before
        # it, so the piece is shown within the 150 ms in which the call, which nobody waited for, was dropped.
        await asyncio.sleep(PIECE_S - 0.05)
        editor.type(uri, 1, 4, "x")
        assert await text_of(editor.inline(uri, 1, 5, invoked=False)) == " ="
        await first  # typed over
        await editor.wait_for(lambda: slow.finished == 1, timeout=10)
        assert slow.completes == 1


async def test_a_pause_after_part_of_a_line_brings_the_whole_line_and_an_invoked_request_waits_for_it(
    banked_env: dict[str, str], slow: SlowDaemon, tmp_path: Path
) -> None:
    """LSP cannot send a longer suggestion by itself: after a pause the server asks the client to ask again
    (`banked/refreshInline`, which banked's own editor plugins follow). A request the user invoked gets a
    whole line, not the first words."""
    ws = make_files(tmp_path / "ws", {"f.py": "def f():\n    \n", "g.py": "def g():\n    \n"})
    async with editing(banked_env, ws, speculate=False) as (client, editor):
        uri = editor.open(ws / "f.py")
        assert await text_of(editor.inline(uri, 1, 4, invoked=False)) == "x ="
        note = await asyncio.wait_for(client.wait_for_notification("banked/refreshInline"), timeout=5)
        assert (note.uri, note.version) == (uri, editor.versions[uri])
        assert await text_of(editor.inline(uri, 1, 4, invoked=False)) == "x = 1"
        other = editor.open(ws / "g.py")
        assert await text_of(editor.inline(other, 1, 4)) == "x = 1"  # invoked


class AheadDaemon(SlowDaemon):
    """Answers `complete` with one line and, when asked for a lookahead, the line after it: what the real
    daemon does at the end of a line (tests/test_default_model.py checks it on the real model)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[int, int, int]] = []  # (line, col, lookahead) of each complete call

    async def _answer(self, writer: asyncio.StreamWriter, msgid: int, method: str, params: Any) -> None:
        if method != "complete":
            await super()._answer(writer, msgid, method, params)
            return
        self.completes += 1
        self.asked.append((params["line"], params["col"], params.get("lookahead", 0)))
        ahead = "    y = 2" if params.get("lookahead") else ""
        for piece in ("x = 1\n", ahead):
            await asyncio.sleep(PIECE_S)
            writer.write(rpc.notification(protocol.TEXT, {"id": msgid, "text": piece}))
        result = protocol.CompleteResult(
            text="x = 1", raw_text="x = 1", decision="one line", path="f.py", workspace=params["path"],
            daemon_ms=1.0, reused_tokens=0, prefilled_tokens=0, generated_tokens=6, ttft_ms=1.0, total_ms=1.0,
            engine="test", model="test", ahead=ahead,
        )  # fmt: skip
        writer.write(rpc.response(msgid, None, msgpack.unpackb(rpc.pack(protocol.encode(result)))))
        self.finished += 1


@pytest_asyncio.fixture
async def ahead(banked_env: dict[str, str]) -> AsyncIterator[AheadDaemon]:
    async for d in serving(banked_env, AheadDaemon()):
        assert isinstance(d, AheadDaemon)
        yield d


async def test_the_line_written_ahead_is_shown_after_enter_and_the_one_after_it_is_speculated(
    banked_env: dict[str, str], ahead: AheadDaemon, tmp_path: Path
) -> None:
    ws = make_files(tmp_path / "ws", {"f.py": "def f():\n    \n"})
    async with editing(banked_env, ws) as (_client, editor):
        uri = editor.open(ws / "f.py")
        assert await text_of(editor.inline(uri, 1, 4)) == "x = 1"
        await editor.wait_for(lambda: ahead.finished == 1, timeout=10)
        assert ahead.asked[0] == (1, 4, 1), "the language server did not ask for the next line"
        # and at once, before the user gets there, a speculation for the line after the one written ahead
        await editor.wait_for(lambda: len(ahead.asked) > 1, timeout=5)
        assert ahead.asked[1][:2] == (3, 0), ahead.asked
        editor.type(uri, 1, 4, "x = 1")  # Tab
        assert await text_of(editor.inline(uri, 1, 9)) == "\n    y = 2"  # the next line, as ghost text
        editor.type(uri, 1, 9, "\n    ")  # Enter, auto-indented
        assert await text_of(editor.inline(uri, 2, 4)) == "y = 2"
        assert all(line != 2 for line, _, _ in ahead.asked), f"the next line needed its own call: {ahead.asked}"


async def test_a_request_whose_call_the_model_took_elsewhere_asks_again_without_a_debounce(
    banked_env: dict[str, str], ahead: AheadDaemon, tmp_path: Path
) -> None:
    """The user typed `y` and the next request followed the running call; the model then writes `x`: the
    request asks again for the text with the `y` at once. It has waited for this text already, so the
    debounce (here 10 s, to tell the two apart) would only make the suggestion later."""
    ws = make_files(tmp_path / "ws", {"f.py": "def f():\n    \n"})
    async with editing(banked_env, ws, speculate=False, debounceMs=10000) as (_client, editor):
        uri = editor.open(ws / "f.py")
        first = editor.inline(uri, 1, 4)  # invoked: no debounce
        await asyncio.sleep(PIECE_S / 5)  # the call runs; nothing written yet
        editor.type(uri, 1, 4, "y")
        second = editor.inline(uri, 1, 5, invoked=False)  # follows the call, which fits the `y` so far
        assert await text_of(first) == ""
        await editor.wait_for(lambda: len(ahead.asked) == 2, timeout=5)
        assert ahead.asked == [(1, 4, 0), (1, 5, 0)]
        assert await text_of(second) == "x = 1"  # the double's answer, for the text with the `y`
