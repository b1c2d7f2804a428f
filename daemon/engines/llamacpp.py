"""The llama.cpp engine (llama-cpp-python): GGUF weights on the CPU, the embedded default.

We use llama-cpp-python's `Llama` for loading and tokenizing but drive the KV
cache ourselves: `llama_memory_seq_rm` truncates exactly, `eval` appends a
chunk, and logits are read from the last position only.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .base import EngineError, EngineInfo, Sampling, ShouldStop, never, sample

_FINGERPRINT_SAMPLE = 1 << 20


def model_digest(path: Path) -> str:
    """A cheap identity for a multi-GB file: size, head and tail bytes (hashing it all takes seconds)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(_FINGERPRINT_SAMPLE))
        f.seek(max(0, size - _FINGERPRINT_SAMPLE))
        h.update(f.read(_FINGERPRINT_SAMPLE))
    return h.hexdigest()[:16]


class LlamaCppEngine:
    def __init__(self, model_path: Path, n_ctx: int = 32768, n_threads: int = 0, chunk: int = 256):
        import llama_cpp  # heavy import: only when an engine is built

        self._lib = llama_cpp
        if not model_path.is_file():
            raise EngineError(f"model file {model_path} does not exist; check `model` in config.toml")
        threads = n_threads or os.cpu_count() or 1
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(model_path),
                n_ctx=n_ctx,
                n_batch=chunk,
                n_ubatch=chunk,
                n_threads=threads,
                n_threads_batch=threads,
                logits_all=False,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"llama.cpp could not load {model_path}: {exc}") from exc
        self._chunk = chunk
        self._ids: list[int] = []
        self._logits_valid = False
        self._n_vocab = self._llm.n_vocab()
        self._rng = np.random.default_rng(0)
        n_ctx = self._llm.n_ctx()
        meta = self._llm.metadata
        arch = meta.get("general.architecture", "llama")
        n_layer = int(meta.get(f"{arch}.block_count", 0))
        n_embd = int(meta.get(f"{arch}.embedding_length", 0))
        n_head = int(meta.get(f"{arch}.attention.head_count", 1))
        n_head_kv = int(meta.get(f"{arch}.attention.head_count_kv", n_head))
        head_dim = int(meta.get(f"{arch}.attention.key_length", n_embd // max(n_head, 1)))
        self.info = EngineInfo(
            name="llamacpp",
            model=meta.get("general.name", model_path.name) or model_path.name,
            device="cpu",
            n_ctx=n_ctx,
            bytes_per_token=n_layer * 2 * n_head_kv * head_dim * 2,  # K and V, f16
            chunk=chunk,
            fingerprint=f"llamacpp-{llama_cpp.__version__}-{model_digest(model_path)}-{n_ctx}",
            extra={"path": str(model_path), "threads": threads},
        )
        self._eos = {self._llm.token_eos()}

    # -- vocabulary -------------------------------------------------------------------------

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        if not text:
            return []
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def detokenize(self, ids: Sequence[int]) -> bytes:
        return bytes(self._llm.detokenize(list(ids), special=False))

    def special_id(self, text: str) -> int | None:
        ids = self.tokenize(text, special=True)
        return ids[0] if len(ids) == 1 else None

    @property
    def eos_ids(self) -> set[int]:
        return set(self._eos)

    # -- the cache --------------------------------------------------------------------------

    @property
    def cached(self) -> Sequence[int]:
        return self._ids

    def truncate(self, n: int) -> None:
        n = max(0, min(n, len(self._ids)))
        if n == len(self._ids):
            return
        self._llm._ctx.kv_cache_seq_rm(-1, n, -1)
        self._llm.n_tokens = n
        del self._ids[n:]
        self._logits_valid = False

    def prefill(self, ids: Sequence[int], should_stop: ShouldStop = never, chunk: int = 0) -> int:
        chunk = min(chunk or self._chunk, self._chunk)
        if len(self._ids) + len(ids) > self.info.n_ctx:
            raise EngineError(
                f"{len(self._ids) + len(ids)} tokens exceed the context of {self.info.n_ctx}; "
                "raise n_ctx or lower the workspace budget"
            )
        done = 0
        for start in range(0, len(ids), chunk):
            if start and should_stop():
                break
            part = list(ids[start : start + chunk])
            self._llm.eval(part)
            self._ids.extend(part)
            self._logits_valid = True
            done += len(part)
        return done

    def logits(self) -> npt.NDArray[np.float32]:
        if not self._ids:
            raise EngineError("no tokens in the cache: nothing to predict from")
        if not self._logits_valid:
            # Two tokens, not one: llama.cpp computes a one-token batch with another kernel
            # (matrix-vector) whose rounding differs from the batched prefill's.
            last = self._ids[-2:]
            self.truncate(len(self._ids) - len(last))
            self.prefill(last)
        ptr = self._lib.llama_get_logits_ith(self._llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

    def generate(
        self,
        max_tokens: int,
        stop_ids: set[int],
        sampling: Sampling | None = None,
        should_stop: ShouldStop = never,
    ) -> Iterator[int]:
        sampling = sampling or Sampling()
        if sampling.temperature > 0:
            self._rng = np.random.default_rng(sampling.seed)
        for _ in range(max_tokens):
            if should_stop() or len(self._ids) >= self.info.n_ctx:
                return
            token = sample(self.logits(), sampling, self._rng)
            if token in stop_ids:
                return
            yield token
            self.prefill([token])

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        arr = (self._lib.llama_token * max(1, len(self._ids)))(*self._ids)
        if not self._lib.llama_state_save_file(self._llm._ctx.ctx, str(path).encode(), arr, len(self._ids)):
            raise EngineError(f"llama.cpp could not write the cache to {path}; is the disk full?")

    def load(self, path: Path) -> list[int]:
        cap = self.info.n_ctx
        arr = (self._lib.llama_token * cap)()
        n = ctypes.c_size_t(0)
        self.truncate(0)
        ok = self._lib.llama_state_load_file(self._llm._ctx.ctx, str(path).encode(), arr, cap, ctypes.byref(n))
        if not ok:
            self._llm._ctx.kv_cache_clear()  # type: ignore[no-untyped-call]
            raise EngineError(f"llama.cpp rejected the saved cache {path}")
        ids = [int(t) for t in arr[: n.value]]
        self._llm.n_tokens = len(ids)
        self._llm.input_ids[: len(ids)] = ids
        self._ids = ids
        self._logits_valid = False
        return list(ids)

    def close(self) -> None:
        self._llm.close()
