"""The engine protocol: everything the workspace cache needs from a model, and no more.

An engine holds one token sequence in its KV cache. The cache manager edits it
with `truncate` and `prefill` only, which is what makes incremental updates
exact: the cache always equals a fresh prefill of `cached`.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

ShouldStop = Callable[[], bool]


def never() -> bool:
    return False


class EngineError(RuntimeError):
    """An engine failed in a way the user can act on; the message says how."""


@dataclass
class EngineInfo:
    name: str
    model: str
    device: str
    n_ctx: int
    bytes_per_token: int
    fingerprint: str
    chunk: int  # tokens per prefill step: the longest a completion waits for background work
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Sampling:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0


class Engine(Protocol):
    info: EngineInfo

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """Token ids of `text`; `special=True` turns special-token text into its id."""
        ...

    def detokenize(self, ids: Sequence[int]) -> bytes: ...

    def special_id(self, text: str) -> int | None:
        """The id of a special token such as "<|fim_prefix|>", or None if the vocab lacks it."""
        ...

    @property
    def cached(self) -> Sequence[int]:
        """The token ids whose keys and values are in the cache, in order."""
        ...

    @property
    def eos_ids(self) -> set[int]: ...

    def truncate(self, n: int) -> None:
        """Keep the first `n` cached tokens, drop the rest."""
        ...

    def prefill(self, ids: Sequence[int], should_stop: ShouldStop = never, chunk: int = 0) -> int:
        """Append `ids` in chunks; stop between chunks when asked. Returns tokens appended."""
        ...

    def logits(self) -> npt.NDArray[np.float32]:
        """Next-token logits after the last cached token (recomputes them if unknown)."""
        ...

    def generate(
        self,
        max_tokens: int,
        stop_ids: set[int],
        sampling: Sampling | None = None,
        should_stop: ShouldStop = never,
    ) -> Iterator[int]:
        """Sample up to `max_tokens`, appending each to the cache; a stop id ends it unappended."""
        ...

    def save(self, path: Path) -> None: ...

    def load(self, path: Path) -> list[int]:
        """Restore a saved cache; returns the token ids it holds. Raises EngineError if bad."""
        ...

    def close(self) -> None: ...


def gpt2_byte_symbols() -> list[str]:
    """The character that stands for each byte in byte-level BPE vocabularies (GPT-2, Qwen)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: b for b in keep}
    extra = 256
    for b in range(256):
        if b not in table:
            table[b] = extra
            extra += 1
    return [chr(table[b]) for b in range(256)]


def sample(logits: npt.NDArray[np.float32], sampling: Sampling, rng: np.random.Generator) -> int:
    """Greedy or temperature/top-p sampling; shared so every engine samples the same way."""
    if sampling.temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / sampling.temperature
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    if sampling.top_p < 1.0:
        order = np.argsort(-p)
        keep = np.cumsum(p[order]) <= sampling.top_p
        keep[0] = True
        mask = np.zeros_like(p, dtype=bool)
        mask[order[keep]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return int(rng.choice(len(p), p=p))


@dataclass
class TextStream:
    """Generated text with stop strings and a line limit, decoded incrementally.

    Held back: text that could be the start of a stop string, so a stop string is
    never shown to the user even when it arrives split across tokens.
    """

    engine: Engine
    stop_strings: Sequence[str] = ()
    max_lines: int = 0  # 0 = unlimited
    text: str = ""
    stopped_by: str = ""
    _emitted: int = 0
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    def feed(self, token: int) -> str:
        """Add one token; returns the newly safe-to-show text ("" if none)."""
        self.text += self._decoder.decode(self.engine.detokenize([token]))
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
        if self.max_lines and self.text.count("\n") >= self.max_lines:
            cut = -1
            for _ in range(self.max_lines):
                cut = self.text.index("\n", cut + 1)
            self.text = self.text[:cut]
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
