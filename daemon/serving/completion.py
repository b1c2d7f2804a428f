"""What a completion request needs besides the model: its cursor, its shape, and answers from the cache.

The cache (ipc/reuse.py) answers a request without the model when the user has typed part of an earlier
completion, or come back to where one was made (a backspace, an undo); clients that keep their own cache
(the language server) rarely reach it, every other client (the CLI, scripts) does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from banked.daemon.context import postprocess, syntax
from banked.daemon.context.cursor import Cursor, OutOfRange
from banked.daemon.engines.base import Engine
from banked.daemon.engines.generation import TextStream, first_lines
from banked.daemon.ipc import protocol as p
from banked.daemon.ipc.reuse import Hit
from banked.daemon.serving.call import Target, UserError

AHEAD_TOKENS = 64  # the budget of each line written ahead of the answer
Ended = Callable[[str], bool] | None


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


def lookahead(params: p.CompleteParams, cursor: Cursor, lines: int) -> int:
    """Lines to go on writing past the answer: only after a one-line answer that ends its line (typing new
    code), where the next line is what the user types after Enter. Writing it in the same call costs its
    decoding only; a speculation after the accept would prefill the tail again first (0.5-0.8 s here)."""
    if params.raw or lines != 1 or cursor.rest.strip():
        return 0
    return params.lookahead


def stream_for(engine: Engine, lines: int, ahead: int, max_tokens: int, ended: Ended) -> tuple[TextStream, int]:
    """The text stream of a completion and the tokens it may generate. Lines ahead get their own budget, and
    the answer keeps its own (`TextStream.answer_tokens`), so it is the same with or without them."""
    if not ahead:
        return TextStream(engine, max_lines=lines, stop_when=ended), max_tokens
    stream = TextStream(engine, max_lines=lines + ahead, stop_when=ended, answer_lines=lines, answer_tokens=max_tokens)
    return stream, max_tokens + AHEAD_TOKENS * ahead


def split_ahead(stream: TextStream, lines: int, ahead: int, budget: int) -> tuple[str, str]:
    """What the model wrote, as the answer (its first `lines` lines, what is shown and cached) and the whole
    lines past it. A line cut by the token limit, or by a shape rule (the model reached the code below the
    cursor), is not a line the user would type next: then nothing is ahead."""
    raw = stream.text
    if not ahead:
        return raw, ""
    answer = first_lines(raw, lines)
    rest = raw[len(answer) + 1 :]
    whole = stream.stopped_by == "max_lines" or (not stream.stopped_by and stream.tokens < budget)
    return answer, rest if whole and rest.strip() else ""


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
