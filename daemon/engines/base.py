"""The engine protocol, and the base class that owns everything engines have in common.

An engine holds one token sequence in its KV cache. The cache manager edits it
with `truncate` and `prefill` only, which is what makes incremental updates
exact: the cache always equals a fresh prefill of `cached`.

`Engine` keeps the token bookkeeping and every loop (chunked prefill,
catching up to a target sequence, the logits recompute, the sampling loop) on
top of three primitives a backend implements: `_forward` (append tokens to
the cache, optionally computing the last position's logits), `_drop_from`
(cut the cache) and `_last_logits`. A backend is then a page of glue.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from banked.daemon.ipc.protocol import EngineInfo as EngineInfo  # the engines fill it in

ShouldStop = Callable[[], bool]
OnProgress = Callable[[int, int], None]  # (tokens cached so far, target length)


def never() -> bool:
    return False


class EngineError(RuntimeError):
    """An engine failed in a way the user can act on; the message says how."""


@dataclass
class Sampling:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share (vectorised: workspaces are 10⁴–10⁵ tokens)."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x = np.asarray(a[:n], dtype=np.int64)
    y = np.asarray(b[:n], dtype=np.int64)
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else n


class Engine:
    """An engine: one token sequence in a KV cache, edited only by `truncate` and `prefill`.

    This class is the whole protocol the rest of banked uses, and it owns the token bookkeeping and the
    loops; a backend subclasses it with the three primitives plus its vocabulary (`tokenize`,
    `detokenize`, `eos_ids`), persistence (`save`, `load`) and `close`.
    """

    info: EngineInfo
    #: The model runs elsewhere (remote.py): a generation's own request prefills what the server lacks, so
    #: `run_generation` hands it the sequence (`set_sequence`) instead of catching up first.
    generates_remotely = False

    def __init__(self, chunk: int, burst: int = 0) -> None:
        """`chunk` is the prefill step that anything may be stopped after (background work yields to a
        request within one); `burst` the larger step a request may take for its own tokens, where the
        backend computes a larger batch faster per token (llama.cpp on a CPU: bench/attention.py)."""
        self._chunk = chunk
        self._burst = max(chunk, burst)
        self._ids: list[int] = []
        self._logits_known = False  # the backend holds logits for the last cached position
        self._rng = np.random.default_rng(0)

    # -- the primitives ---------------------------------------------------------------------

    def _forward(self, ids: Sequence[int], want_logits: bool) -> None:
        """Append `ids` (at most one chunk) to the backend's cache; compute the last logits if asked."""
        raise NotImplementedError

    def _drop_from(self, n: int) -> None:
        """Cut the backend's cache to its first `n` positions."""
        raise NotImplementedError

    def _last_logits(self) -> npt.NDArray[np.float32]:
        """The logits `_forward(..., want_logits=True)` computed last, as float32 on the host."""
        raise NotImplementedError

    def _greedy(self) -> int:
        """The argmax of the last logits (a backend may do it where the logits live)."""
        return int(np.argmax(self._last_logits()))

    # -- the cache --------------------------------------------------------------------------

    @property
    def cached(self) -> Sequence[int]:
        """The token ids whose keys and values are in the cache, in order."""
        return self._ids

    def truncate(self, n: int) -> None:
        """Keep the first `n` cached tokens, drop the rest."""
        n = max(0, min(n, len(self._ids)))
        if n == len(self._ids):
            return
        self._drop_from(n)
        del self._ids[n:]
        self._logits_known = False

    def _append(self, ids: Sequence[int], want_logits: bool) -> None:
        self._forward(ids, want_logits)
        self._ids.extend(ids)
        self._logits_known = want_logits

    @property
    def burst(self) -> int:
        """The largest prefill step (a request's own tokens: `catch_up(..., chunk=engine.burst)`)."""
        return self._burst

    def _step(self, chunk: int) -> int:
        """The prefill step for a caller's `chunk` (0: the small default), never above the burst."""
        return min(chunk or self._chunk, self._burst)

    def prefill(self, ids: Sequence[int], should_stop: ShouldStop = never, chunk: int = 0) -> int:
        """Append `ids` in chunks; stop between chunks when asked. Returns tokens appended."""
        chunk = self._step(chunk)
        if len(self._ids) + len(ids) > self.info.n_ctx:
            raise EngineError(
                f"{len(self._ids) + len(ids)} tokens exceed the context of {self.info.n_ctx}; "
                "raise n_ctx or lower the workspace budget"
            )
        done = 0
        for start in range(0, len(ids), chunk):
            if start and should_stop():
                break
            part = ids[start : start + chunk]
            self._append(part, want_logits=start + chunk >= len(ids))
            done += len(part)
        return done

    def catch_up(
        self,
        ids: Sequence[int],
        should_stop: ShouldStop = never,
        on_progress: OnProgress | None = None,
        chunk: int = 0,
    ) -> int:
        n = common_prefix(self._ids, ids)
        self.truncate(n)
        step = self._step(chunk)
        done = 0
        while n + done < len(ids):
            if done and should_stop():
                break
            done += self.prefill(ids[n + done : n + done + step], chunk=step)
            if on_progress is not None:
                on_progress(n + done, len(ids))
        return done

    def set_sequence(self, ids: Sequence[int]) -> None:
        """Remote engines only: the sequence the next generation runs after (its request prefills it)."""
        raise NotImplementedError

    def check(self) -> None:
        """Before a request (model thread): make sure the cache is what `cached` says (a remote engine's slot
        may have been taken or its server restarted). Local engines always are."""

    def served(self) -> tuple[int, int] | None:
        """Remote engines: (prompt tokens the server reused, prompt tokens it computed) in its last request,
        as the server counted them; None for a local engine (its own counts are exact)."""
        return None

    def logits(self) -> npt.NDArray[np.float32]:
        """Next-token logits after the last cached token (recomputed if unknown)."""
        self._ensure_logits()
        return self._last_logits()

    def _ensure_logits(self) -> None:
        if not self._ids:
            raise EngineError("no tokens in the cache: nothing to predict from")
        if not self._logits_known:
            # Two tokens, not one: a one-token batch runs another kernel (matrix-vector) whose rounding
            # differs from the batched prefill's.
            last = self._ids[-2:]
            self.truncate(len(self._ids) - len(last))
            self._append(last, want_logits=True)

    def generate(
        self,
        max_tokens: int,
        stop_ids: set[int],
        sampling: Sampling | None = None,
        should_stop: ShouldStop = never,
    ) -> Generator[int, None, None]:
        """Sample up to `max_tokens`, appending each to the cache; a stop id ends it unappended."""
        sampling = sampling or Sampling()
        if sampling.temperature > 0:
            self._rng = np.random.default_rng(sampling.seed)
        for _ in range(max_tokens):
            if should_stop() or len(self._ids) >= self.info.n_ctx:
                return
            self._ensure_logits()
            token = self._greedy() if sampling.temperature <= 0 else sample(self._last_logits(), sampling, self._rng)
            if token in stop_ids:
                return
            yield token
            self._append([token], want_logits=True)

    # -- what a backend adds -----------------------------------------------------------------

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """Token ids of `text`; `special=True` turns special-token text into its id."""
        raise NotImplementedError

    def detokenize(self, ids: Sequence[int]) -> bytes:
        raise NotImplementedError

    @property
    def eos_ids(self) -> set[int]:
        raise NotImplementedError

    def save(self, path: Path) -> None:
        raise NotImplementedError

    def load(self, path: Path) -> list[int]:
        """Restore a saved cache; returns the token ids it holds. Raises EngineError if bad."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def special_id(self, text: str) -> int | None:
        """The id of a special token such as "<|fim_prefix|>", or None if the vocab lacks it."""
        ids = self.tokenize(text, special=True)
        return ids[0] if len(ids) == 1 else None


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
