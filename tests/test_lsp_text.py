"""The LSP's conversions between editor shapes and the daemon's (no editor or daemon needed)."""

from __future__ import annotations

from banked.lsp import text
from banked.lsp.features.completion import next_piece
from banked.lsp.settings import Settings
from lsprotocol import types


def rng(a: int, b: int, c: int, d: int) -> types.Range:
    return types.Range(start=types.Position(line=a, character=b), end=types.Position(line=c, character=d))


def apply(doc: str, edit: types.TextEdit) -> str:
    """Apply a TextEdit the way an editor does (UTF-16 columns)."""
    lines = [*doc.splitlines(keepends=True), ""]

    def offset(p: types.Position) -> int:
        before = sum(len(x) for x in lines[: p.line])
        line16 = lines[p.line].encode("utf-16-le")[: 2 * p.character].decode("utf-16-le")
        return before + len(line16)

    return doc[: offset(edit.range.start)] + edit.new_text + doc[offset(edit.range.end) :]


def test_a_selection_ending_at_column_zero_stops_the_line_before() -> None:
    assert text.selected_lines(rng(3, 0, 5, 0)) == (4, 5)
    assert text.selected_lines(rng(3, 2, 5, 1)) == (4, 6)
    assert text.selected_lines(rng(3, 0, 3, 0)) == (4, 4)


def test_replacing_lines_keeps_the_rest_and_the_line_endings() -> None:
    doc = "a = 1\r\ndef f():\r\n    return 1\r\nb = 2\r\n"
    edit = text.replace_lines_edit(doc, 2, 3, "def f():\n    return 2")
    assert apply(doc, edit) == "a = 1\r\ndef f():\r\n    return 2\r\nb = 2\r\n"
    # The last line of a file without a final newline, with a non-BMP character before the end.
    doc2 = "x = 1\ny = '😀'"
    edit2 = text.replace_lines_edit(doc2, 2, 2, "y = 2\n")
    assert edit2.range.end == types.Position(line=1, character=len("y = '") + 2 + 1)
    assert apply(doc2, edit2) == "x = 1\ny = 2"


def test_test_files_follow_each_languages_convention() -> None:
    assert text.test_file_for("/w/pkg/units.py") == "/w/pkg/test_units.py"
    assert text.test_file_for("/w/main.go") == "/w/main_test.go"
    assert text.test_file_for("/w/src/app.ts") == "/w/src/app.test.ts"


def test_append_edit_separates_with_a_blank_line() -> None:
    assert apply("a = 1\n", text.append_edit("a = 1\n", "b = 2\n")) == "a = 1\n\nb = 2\n"
    assert apply("a = 1", text.append_edit("a = 1", "b = 2\n")) == "a = 1\n\nb = 2\n"


def test_settings_accept_both_shapes_and_ignore_junk() -> None:
    s = Settings().updated({"banked": {"debounceMs": 10, "maxLines": 3, "languages": {"python": False}}})
    assert (s.debounce_ms, s.max_lines) == (10, 3)
    assert not s.language_enabled("python") and s.language_enabled("go")
    s2 = s.updated({"debounce_ms": "fast", "enabled": "yes", "unknown": 1, "socket": "/tmp/x.sock"})
    assert s2.debounce_ms == 10 and s2.enabled is True and s2.socket == "/tmp/x.sock"
    assert not s2.updated({"enabled": False}).language_enabled("go")


def test_a_piece_is_the_line_as_far_as_written_or_whole_once_it_ends() -> None:
    assert next_piece("outcome = Result.from_ca") == "outcome = Result.from_ca"  # a prefix of the answer
    assert next_piece("outcome\n        return outcome") == "outcome"  # the line ended: only it
    assert next_piece("\n        outc") == "\n        outc"  # the next line, begun
    assert next_piece("\n        ") is None  # only a line break and indentation so far: nothing to show
    assert next_piece("\n        outcome = ") == "\n        outcome ="  # blanks come with what follows
