"""The cursor of a request: one immutable value, derived once, read by everyone.

The completion shape (postprocess), the FIM tail (wscache), the syntax queries
(syntax) and the clean-up all need the same lines, the same clamped column and
the same text before and after the cursor; deriving it in each place let them
drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


class OutOfRange(ValueError):
    """A position past the end of the buffer; the message says where the buffer ends (1-based)."""


@dataclass(frozen=True)
class Cursor:
    text: str
    lines: tuple[str, ...]  # text.split("\n")
    line: int  # 0-based
    col: int  # 0-based, in characters

    @classmethod
    def at(cls, text: str, line: int, col: int, name: str = "the buffer", strict: bool = False) -> Cursor:
        """The cursor at (line, col) of `text`. Out of range: clamped, or with `strict` an OutOfRange."""
        lines = tuple(text.split("\n"))
        if strict and line >= len(lines):
            raise OutOfRange(f"line {line + 1} is past the end of {name} ({len(lines)} lines)")
        row = max(0, min(line, len(lines) - 1))
        if strict and col > len(lines[row]):
            raise OutOfRange(
                f"column {col + 1} is past the end of line {row + 1} of {name} ({len(lines[row])} characters)"
            )
        return cls(text, lines, row, max(0, min(col, len(lines[row]))))

    @property
    def current(self) -> str:
        """The cursor's whole line."""
        return self.lines[self.line]

    @property
    def before(self) -> str:
        """The cursor's line up to the cursor."""
        return self.current[: self.col]

    @property
    def rest(self) -> str:
        """The cursor's line after the cursor."""
        return self.current[self.col :]

    def below(self, n: int) -> tuple[str, ...]:
        """Up to `n` lines after the cursor's line."""
        return self.lines[self.line + 1 : self.line + 1 + n]

    @cached_property
    def head(self) -> str:
        """Everything before the cursor."""
        return "\n".join([*self.lines[: self.line], self.before])

    @cached_property
    def after(self) -> str:
        """Everything after the cursor."""
        return "\n".join([self.rest, *self.lines[self.line + 1 :]])

    @cached_property
    def byte_offset(self) -> int:
        """The cursor's offset in the UTF-8 encoding of the text (what tree-sitter counts in)."""
        head = sum(len(s.encode("utf-8", "surrogatepass")) + 1 for s in self.lines[: self.line])
        return head + len(self.before.encode("utf-8", "surrogatepass"))

    def window(self, start: int) -> str:
        """The text before the cursor from line `start` (0-based) on."""
        return "\n".join([*self.lines[max(0, min(start, self.line)) : self.line], self.before])


def window_start(line: int, lines_before: int, slack: int, previous: int | None = None) -> int:
    """The first line of the FIM tail's prefix window for a cursor on `line`.

    A jump (no usable `previous`) gets exactly `lines_before` lines: the first call at a new place prefills
    the whole window at the workspace's depth, the costliest thing a keystroke can cause, so it is kept
    short (the saved file is in the prefix already). While the user types on below it, the start stays put
    (every line of it re-prefilled otherwise) until the window is `slack` lines longer than it needs to be;
    a cursor moved above `previous + lines_before` starts a new window, since the lines right above the
    cursor matter most."""
    fresh = max(0, line - lines_before)
    if previous is not None and fresh - slack <= previous <= fresh:
        return previous
    return fresh
