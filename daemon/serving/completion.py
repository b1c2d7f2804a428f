"""What a completion request needs besides the model: its cursor, its shape, and answers from the cache.

The cache (ipc/reuse.py) answers a request without the model when the user has typed part of an earlier
completion, or come back to where one was made (a backspace, an undo); clients that keep their own cache
(the language server) rarely reach it, every other client (the CLI, scripts) does.
"""

from __future__ import annotations

import time

from banked.daemon.context import postprocess, syntax
from banked.daemon.context.cursor import Cursor, OutOfRange
from banked.daemon.ipc import protocol as p
from banked.daemon.ipc.reuse import Hit
from banked.daemon.serving.call import Target, UserError


def cursor_at(text: str, params: p.CompleteParams, rel: str) -> Cursor:
    try:
        return Cursor.at(text, params.line, params.col, rel, strict=True)
    except OutOfRange as exc:
        raise UserError(str(exc)) from None


def scope(t: Target, params: p.CompleteParams) -> str:
    """The cache's name for this buffer and the request's shape settings."""
    return f"{t.entry.root}/{t.rel}|{params.max_lines}|{params.max_tokens}"


def shape(
    parses: syntax.ParseCache, t: Target, cursor: Cursor, block_lines: int, multiline: str = "auto"
) -> tuple[syntax.Parsed | None, postprocess.Decision]:
    """One line mid-line, in an argument list, string or comment, or among code; a block after an opener or
    at the start of an empty block (`postprocess.decide`). Parsing is CPU work: call it off the event loop."""
    parsed = parses.parse(f"{t.entry.root}/{t.rel}", cursor.text)
    return parsed, postprocess.decide(parsed, cursor, block_lines, multiline)


def from_cache(hit: Hit, t: Target, engine: str, model: str, t0: float) -> p.CompleteResult:
    ms = round(1000 * (time.perf_counter() - t0), 3)
    return p.CompleteResult(
        text=hit.text,
        raw_text=hit.text,
        decision=f"reused: {hit.typed} characters of a cached completion typed since" if hit.typed else "cached",
        reused_tokens=0,
        prefilled_tokens=0,
        generated_tokens=0,
        ttft_ms=ms,
        total_ms=ms,
        engine=engine,
        model=model,
        path=t.rel,
        workspace=str(t.entry.root),
        daemon_ms=ms,
        cached=True,
    )
