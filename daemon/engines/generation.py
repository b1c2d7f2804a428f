"""One streamed answer from the warm cache: the text stream, the resumable generation, and its loop.

The whole inference path of a request, readable at once: catch the cache up to
prefix + tail (+ what was generated before a preemption), sample token by
token, stream the decoded text, and drop the sampled tokens afterwards so the
cache again holds only what a batched prefill produced.
"""

from __future__ import annotations

import codecs
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from banked.daemon.engines.base import Engine, Sampling, ShouldStop, common_prefix, never


@dataclass
class TextStream:
    """Generated text with stop strings and a line limit, decoded incrementally.

    Held back: text that could be the start of a stop string, so a stop string is
    never shown to the user even when it arrives split across tokens.
    """

    engine: Engine
    stop_strings: Sequence[str] = ()
    max_lines: int = 0  # 0 = unlimited
    stop_when: Callable[[str], bool] | None = None  # the text so far is already complete (a shape rule)
    # With lines written ahead of the answer (a completion's lookahead), the answer's own budget: its first
    # `answer_lines` lines must end within `answer_tokens` tokens, or it stops there, as it would without them.
    answer_lines: int = 0
    answer_tokens: int = 0
    tokens: int = 0
    text: str = ""
    stopped_by: str = ""
    _emitted: int = 0
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    def feed(self, token: int) -> str:
        """Add one token; returns the newly safe-to-show text ("" if none)."""
        self.text += self._decoder.decode(self.engine.detokenize([token]))
        self.tokens += 1
        return self._release()

    def finish(self) -> str:
        self.text += self._decoder.decode(b"", final=True)
        return self._release(final=True)

    @property
    def done(self) -> bool:
        return bool(self.stopped_by)

    def _release(self, final: bool = False) -> str:
        for s in self.stop_strings:
            at = self.text.find(s)
            if at >= 0:
                self.text = self.text[:at]
                self.stopped_by = f"stop:{s!r}"
                final = True
        if self.stop_when is not None and not self.stopped_by and self.stop_when(self.text):
            self.stopped_by = "shape"
            final = True
        if self.answer_tokens and self.tokens >= self.answer_tokens and self.text.count("\n") < self.answer_lines:
            self.stopped_by = "answer_tokens"
            final = True
        if self.max_lines and self.text.count("\n") >= self.max_lines:
            self.text = first_lines(self.text, self.max_lines)
            self.stopped_by = "max_lines"
            final = True
        safe = len(self.text)
        if not final:
            for s in self.stop_strings:
                for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                    if self.text.endswith(s[:k]):
                        safe = min(safe, len(self.text) - k)
                        break
        out = self.text[self._emitted : safe]
        self._emitted = max(self._emitted, safe)
        return out


def first_lines(text: str, n: int) -> str:
    """`text` up to its `n`-th line break, which is left out: what a limit of `n` lines keeps.

    One definition, shared by decoding and by the quality bench's replay of recorded answers, so a
    replay under a smaller limit cuts exactly where decoding would have stopped."""
    parts = text.split("\n")
    return text if len(parts) <= n else "\n".join(parts[:n])


@dataclass
class Generation:
    """One streamed answer; resumable, so a completion can preempt an explanation."""

    tail: list[int]
    stops: set[int]
    max_tokens: int
    stream: TextStream
    on_text: Callable[[str], None] = lambda _t: None
    sampling: Sampling = field(default_factory=Sampling)
    chunk: int = 0  # its prefill step (0: the engine's; a completion request takes `engine.burst`)
    generated: list[int] = field(default_factory=list)
    reused_tokens: int = -1
    prefilled_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)
    ttft_s: float | None = None
    finished: bool = False

    def metrics(self) -> dict[str, float | int]:
        now = time.perf_counter()
        return {
            "reused_tokens": max(self.reused_tokens, 0),
            "prefilled_tokens": self.prefilled_tokens,
            "generated_tokens": len(self.generated),
            "ttft_ms": round(1000 * (self.ttft_s if self.ttft_s is not None else now - self.started), 1),
            "total_ms": round(1000 * (now - self.started), 1),
        }


class Context(Protocol):
    """What a generation runs after: an engine, and the part of a plan its cache holds (a WorkspaceCache)."""

    engine: Engine

    def prefix(self) -> list[int]: ...


def _catch_up(engine: Engine, g: Generation, seq: list[int], stop: ShouldStop) -> bool:
    """Bring the cache to `seq`; False if it stopped short. A remote engine is only told the sequence: the
    generation's own request prefills what the server lacks (one round trip, not two)."""
    if engine.generates_remotely:
        engine.set_sequence(seq)
        return True
    g.prefilled_tokens += engine.catch_up(seq, stop, chunk=g.chunk)
    return len(engine.cached) >= len(seq)


def run_generation(
    context: Context, g: Generation, cancelled: ShouldStop = never, preempted: ShouldStop = never
) -> bool:
    """Advance `g` after the context's prefix; True when it is finished (done, stopped or cancelled)."""
    engine = context.engine
    prefix = context.prefix()
    seq = prefix + g.tail + g.generated
    yielded = False

    def stop() -> bool:
        nonlocal yielded
        if cancelled():
            return True
        yielded = preempted()
        return yielded

    if g.reused_tokens < 0:
        g.reused_tokens = common_prefix(engine.cached, seq)
    if not _catch_up(engine, g, seq, stop):
        return not yielded
    with contextlib.closing(engine.generate(g.max_tokens - len(g.generated), g.stops, g.sampling, stop)) as toks:
        for tok in toks:  # leaving the loop closes the stream (a remote request is aborted there and then)
            g.generated.append(tok)
            text = g.stream.feed(tok)
            if g.ttft_s is None:
                g.ttft_s = time.perf_counter() - g.started
            if text:
                g.on_text(text)
            if g.stream.done:
                break
    if (served := engine.served()) is not None:  # the server's own counts of what it reused and computed
        g.reused_tokens, g.prefilled_tokens = served[0], g.prefilled_tokens + served[1]
    if yielded and not g.stream.done:
        return False
    rest = g.stream.finish()
    if rest:
        g.on_text(rest)
    # Generated tokens were decoded one at a time (another kernel, other rounding): drop them, so
    # everything left in the cache came from a batched prefill and equals a fresh one exactly.
    engine.truncate(len(prefix) + len(g.tail))
    g.finished = True
    return True
