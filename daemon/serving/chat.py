"""Chat turns (explain, refactor, write tests) on the lines of a buffer: plain functions the methods call.

A turn is: pick the lines (as asked, else the definition around the cursor),
put them in the method's prompt, run it as a chat tail after the warm
workspace, and report the answer with the selection it was about. A refactor
is also checked: it must not add parse errors to the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from banked.daemon.context import pycheck, syntax
from banked.daemon.engines.generation import Generation
from banked.daemon.ipc import protocol as p
from banked.daemon.serving.call import Target, UserError


@dataclass(frozen=True)
class Turn:
    """A finished chat turn: the answer and the lines it was about."""

    g: Generation
    target: Target
    text: str  # the whole buffer the selection was taken from
    start: int
    end: int
    original: str


def selected_lines(parses: syntax.ParseCache, t: Target, text: str, params: p.ChatParams) -> tuple[int, int]:
    """1-based inclusive lines: as asked, else the definition the cursor's line starts or the top-level one
    around it (tree-sitter), else the top-level block around the cursor. CPU work: call it off the event loop."""
    lines = text.splitlines(keepends=True)
    if params.start_line is None and params.end_line is None and params.cursor_line is not None:
        parsed = parses.parse(f"{t.entry.root}/{t.rel}", text)
        found = syntax.definition_at(parsed, params.cursor_line) if parsed is not None else None
        start, end = found or syntax.indented_block(text.splitlines(), params.cursor_line)
    else:
        start = params.start_line or 1
        end = len(lines) if params.end_line is None else params.end_line
    if not (start <= max(end, 1) and end <= max(len(lines), 1)):
        raise UserError(f"lines {start}-{end} are not within {t.rel} (1-{len(lines)})")
    return start, end


def fields(turn: Turn, engine: str, model: str) -> dict[str, Any]:
    """What every chat result carries: timings, the engine, and the selection it was about."""
    return {
        **turn.g.metrics(),
        "engine": engine,
        "model": model,
        "path": turn.target.rel,
        "start_line": turn.start,
        "end_line": turn.end,
        "original": turn.original,
        "digest": hashlib.sha256(turn.text.encode()).hexdigest(),
        "workspace": str(turn.target.entry.root),
    }


def rewrite_problems(turn: Turn, replacement: str, validate: bool) -> list[str]:
    """What is wrong with the file once the rewrite is applied, one line each; [] when nothing is.

    It must parse no worse than before (tree-sitter, every language), and in Python it must not use a name
    it defines nowhere (pyflakes): both fail at import, not when the user reads the diff."""
    language = syntax.language_of(turn.target.rel)
    if language is None or not validate:
        return []
    new = p.replace_lines(turn.text, turn.start, turn.end, replacement)
    before = syntax.error_lines(syntax.parse_text(language, turn.text))
    after = syntax.error_lines(syntax.parse_text(language, new))
    if len(after) > len(before):
        return [f"it does not parse (near line {after[0] + 1})"]
    if language == "python":
        return [
            f"line {line} uses `{name}`, defined nowhere" for line, name in pycheck.new_undefined_names(turn.text, new)
        ]
    return []
