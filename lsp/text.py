"""Plain functions between LSP shapes and the daemon's: lines, ranges, edits, test file names.

The daemon counts lines from 1 for selections and columns in characters; LSP
counts from 0 and (by default) in UTF-16 units. Every conversion lives here so
handlers stay thin and these rules are unit-tested without an editor.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from lsprotocol import types


def utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def selected_lines(rng: types.Range) -> tuple[int, int]:
    """The 1-based inclusive lines a selection covers; a selection ending at column 0 stops the line before."""
    start = rng.start.line + 1
    end = rng.end.line + 1
    if rng.end.character == 0 and rng.end.line > rng.start.line:
        end -= 1
    return start, max(start, end)


def replace_lines_edit(text: str, start: int, end: int, replacement: str) -> types.TextEdit:
    """A TextEdit replacing 1-based lines start..end of `text`, in the file's own line ending."""
    lines = text.splitlines(keepends=True)
    eol = "\r\n" if "\r\n" in text else "\n"
    new = replacement.replace("\r\n", "\n").replace("\n", eol)
    last = lines[end - 1] if 0 < end <= len(lines) else ""
    if last.endswith(("\n", "\r")):
        if new and not new.endswith(eol):
            new += eol
        end_pos = types.Position(line=end, character=0)
    else:  # the selection runs to the end of a file without a final newline
        new = new[: -len(eol)] if new.endswith(eol) else new
        end_pos = types.Position(line=max(end - 1, 0), character=utf16_len(last))
    return types.TextEdit(
        range=types.Range(start=types.Position(line=start - 1, character=0), end=end_pos), new_text=new
    )


def append_edit(text: str, addition: str) -> types.TextEdit:
    """A TextEdit adding `addition` at the end of `text`, separated by a blank line."""
    lines = text.splitlines(keepends=True)
    if not lines:
        pos = types.Position(line=0, character=0)
        return types.TextEdit(range=types.Range(start=pos, end=pos), new_text=addition)
    last = lines[-1]
    if last.endswith(("\n", "\r")):
        pos = types.Position(line=len(lines), character=0)
        sep = "\n"
    else:
        pos = types.Position(line=len(lines) - 1, character=utf16_len(last))
        sep = "\n\n"
    return types.TextEdit(range=types.Range(start=pos, end=pos), new_text=sep + addition)


def test_file_for(path: str) -> str:
    """Where a project of that language keeps tests of `path` (same directory; conventions per language)."""
    p = PurePosixPath(path)
    stem, ext = p.stem, p.suffix
    if ext == ".go":
        name = f"{stem}_test.go"
    elif ext in (".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs"):
        name = f"{stem}.test{ext}"
    elif ext == ".rs":
        name = f"{stem}_tests.rs"
    elif ext == ".java":
        name = f"{stem}Test.java"
    else:
        name = f"test_{stem}{ext}"
    return str(p.with_name(name))


def label_for(text: str, limit: int = 60) -> str:
    """A one-line label for a completion item (the first non-empty line, shortened)."""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), text.strip())
    return first if len(first) <= limit else first[: limit - 1] + "…"
