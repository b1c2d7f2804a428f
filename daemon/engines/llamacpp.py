"""The llama.cpp engine (llama-cpp-python): GGUF weights on the CPU, the embedded default.

We use llama-cpp-python's `Llama` for loading and tokenizing but drive the KV
cache ourselves through the base class's three primitives: `eval` appends a
chunk, `kv_cache_seq_rm` truncates exactly, and logits are read from the last
position only.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from banked.daemon.engines.base import Engine, EngineError, EngineInfo

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


class LlamaCppEngine(Engine):
    def __init__(
        self,
        model_path: Path,
        n_ctx: int = 32768,
        n_threads: int = 0,
        chunk: int = 256,
        flash_attn: bool = False,
        burst: int = 0,
    ):
        """`flash_attn` stays off in banked: on this project's 2-core CPUs it is slower (bench/attention.py).
        llama.cpp batches up to `burst` tokens (a request's own prefill), `chunk` elsewhere."""
        import llama_cpp  # heavy import: only when an engine is built

        super().__init__(chunk, burst)
        self._lib = llama_cpp
        if not model_path.is_file():
            raise EngineError(f"model file {model_path} does not exist; check `model` in config.toml")
        threads = n_threads or os.cpu_count() or 1
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(model_path),
                n_ctx=n_ctx,
                n_batch=self._burst,
                n_ubatch=self._burst,
                n_threads=threads,
                n_threads_batch=threads,
                flash_attn=flash_attn,
                logits_all=False,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"llama.cpp could not load {model_path}: {exc}") from exc
        self._n_vocab = self._llm.n_vocab()
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
            fingerprint=f"llamacpp-{llama_cpp.__version__}-{model_digest(model_path)}-{n_ctx}"
            + ("-flash" if flash_attn else ""),  # another kernel: a snapshot of one is not the other's cache
            extra={"path": str(model_path), "threads": threads, "request_chunk": self._burst},
        )
        self._eos = {self._llm.token_eos()}

    # -- vocabulary -------------------------------------------------------------------------

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        if not text:
            return []
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def detokenize(self, ids: Sequence[int]) -> bytes:
        return bytes(self._llm.detokenize(list(ids), special=False))

    @property
    def eos_ids(self) -> set[int]:
        return set(self._eos)

    # -- the three primitives ---------------------------------------------------------------

    def _forward(self, ids: Sequence[int], want_logits: bool) -> None:
        self._llm.eval(list(ids))  # computes the last position's logits either way

    def _drop_from(self, n: int) -> None:
        self._llm._ctx.kv_cache_seq_rm(-1, n, -1)
        self._llm.n_tokens = n

    def _last_logits(self) -> npt.NDArray[np.float32]:
        ptr = self._lib.llama_get_logits_ith(self._llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

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
        self._logits_known = False
        return list(ids)

    def close(self) -> None:
        self._llm.close()
