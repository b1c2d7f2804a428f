"""The exl2 engine: exllamav2 with EXL2 weights on CUDA, and an FP16/Q8/Q6/Q4 KV cache.

exllamav2 is imported lazily: importing it compiles (or loads) a CUDA extension
and fails on a machine without a GPU, where everything else must still work.

One trap is fixed here. Without flash-attn, exllamav2 0.3.2 runs attention
through torch SDPA, but for an ordinary causal forward it passes the
*block-diagonal* mask, which is None for a single sequence: multi-token
prefill chunks then attend to their own future. We route that case through
SDPA with a lower-right causal bias (exact, and memory-efficient, so chunks
need not shrink at long context). tests/gpu/ checks chunked prefill against
token-by-token decoding.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from banked.daemon.engines.base import Engine, EngineError, EngineInfo, gpt2_byte_symbols

log = logging.getLogger(__name__)

CACHE_TYPES = {
    "fp16": "ExLlamaV2Cache",
    "q8": "ExLlamaV2Cache_Q8",
    "q6": "ExLlamaV2Cache_Q6",
    "q4": "ExLlamaV2Cache_Q4",
}


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def is_exl2_dir(path: Path) -> bool:
    """An EXL2 model: a directory whose config.json names the exl2 quantization."""
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    q = cfg.get("quantization_config") or {}
    return isinstance(q, dict) and q.get("quant_method") == "exl2" and any(path.glob("*.safetensors"))


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: a vocab piece's characters back to bytes."""
    return {ch: b for b, ch in enumerate(gpt2_byte_symbols())}


_patched = False


def patch_causal_sdpa() -> None:
    """Make exllamav2's SDPA attention causal for multi-token chunks (see the module docstring).

    Installed once per process; it acts for models whose config sets `banked_causal_fix`.
    """
    global _patched
    if _patched:
        return
    import torch.nn.functional as F  # noqa: N812
    from exllamav2 import attn as xattn

    if not xattn.has_lower_right_sdpa:
        return
    from torch.nn.attention.bias import causal_lower_right

    original = xattn.ExLlamaV2Attention._attn_torch

    def _attn_torch(
        self: Any,
        batch_size: int,
        q_len: int,
        q_states: Any,
        k_states: Any,
        v_states: Any,
        attn_params: Any,
        cfg: Any,
        causal: bool = True,
    ) -> Any:
        plain = (
            causal
            and getattr(cfg, "banked_causal_fix", False)
            and not cfg.no_sdpa
            and not cfg.attn_logit_softcapping
            and not self.sliding_window
            and self.layer_idx not in attn_params.block_diag_layers
            and attn_params.is_causal()
            and attn_params.get_cu_seqlens(q_states.device) is None
        )
        if not plain:
            return original(self, batch_size, q_len, q_states, k_states, v_states, attn_params, cfg, causal)
        q, k, v = (t.transpose(1, 2) for t in (q_states, k_states, v_states))
        mask = causal_lower_right(q_len, k.shape[2]) if q_len > 1 else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling, enable_gqa=True)
        return out.transpose(1, 2).reshape((batch_size, q_len, self.num_attention_heads * self.head_dim))

    xattn.ExLlamaV2Attention._attn_torch = _attn_torch
    _patched = True


def model_fingerprint(model_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(model_dir.iterdir()):
        if p.is_file():
            h.update(f"{p.name}:{p.stat().st_size}".encode())
    h.update((model_dir / "config.json").read_bytes())
    return h.hexdigest()[:16]


def _config(
    exllamav2: Any, model_dir: Path, n_ctx: int, chunk: int, rope_scale: float, rope_alpha: float, causal_fix: bool
) -> Any:
    """exllamav2's config for the model, with banked's context, chunk and RoPE overrides."""
    config = exllamav2.ExLlamaV2Config(str(model_dir))
    config.banked_causal_fix = causal_fix  # read by the patched attention, per model
    if rope_scale:
        config.scale_pos_emb = rope_scale
    if rope_alpha:
        config.scale_alpha_value = rope_alpha
    if n_ctx:
        config.max_seq_len = n_ctx
    config.max_input_len = chunk
    # Our causal SDPA never materialises the attention matrix: keep chunks whole at any context.
    # Without it, exllamav2's default bound (2048²) applies, as for any exllamav2 user.
    config.max_attention_size = chunk * (config.max_seq_len + chunk) if causal_fix else 2048**2
    return config


class Exl2Engine(Engine):
    def __init__(
        self,
        model_dir: Path,
        n_ctx: int = 0,
        cache_type: str = "q4",
        chunk: int = 2048,
        rope_scale: float = 0.0,
        rope_alpha: float = 0.0,
        causal_fix: bool = True,
    ):
        try:
            import torch
        except ImportError as exc:
            raise EngineError('the exl2 engine needs PyTorch with CUDA; use engine = "llamacpp"') from exc
        super().__init__(chunk)
        if not torch.cuda.is_available():
            raise EngineError('the exl2 engine needs a CUDA GPU and none is visible; use engine = "llamacpp"')
        if cache_type not in CACHE_TYPES:
            raise EngineError(f"cache_type {cache_type!r} is not one of {sorted(CACHE_TYPES)}")
        if not is_exl2_dir(model_dir):
            raise EngineError(f"{model_dir} is not an EXL2 model directory; make one with `banked model convert`")
        try:
            import exllamav2
        except ImportError as exc:
            raise EngineError("the exl2 engine needs exllamav2==0.3.2: pip install exllamav2==0.3.2") from exc
        patch_causal_sdpa()
        self._torch = torch
        self.config = config = _config(exllamav2, model_dir, n_ctx, chunk, rope_scale, rope_alpha, causal_fix)
        self.model = exllamav2.ExLlamaV2(config)
        cache_cls = getattr(exllamav2, CACHE_TYPES[cache_type])
        try:
            self.cache = cache_cls(self.model, max_seq_len=config.max_seq_len, lazy=True)
            self.model.load_autosplit(self.cache, progress=False)
        except torch.cuda.OutOfMemoryError as exc:
            raise EngineError(
                f"the GPU ran out of memory loading {model_dir} with a {config.max_seq_len}-token {cache_type} "
                'cache; lower n_ctx or use cache_type = "q4"'
            ) from exc
        self.tokenizer = exllamav2.ExLlamaV2Tokenizer(config)
        self._pieces = self._byte_pieces(model_dir)
        self._last: Any = None  # logits after the last cached token, on the GPU
        self.cache_type = cache_type
        cache_bytes = sum(t.numel() * t.element_size() for t in self.cache.all_tensors())
        self.info = EngineInfo(
            name="exl2",
            model=model_dir.name,
            device=torch.cuda.get_device_name(0),
            n_ctx=config.max_seq_len,
            bytes_per_token=cache_bytes // config.max_seq_len,
            chunk=chunk,
            fingerprint=f"exl2-{exllamav2.__version__}-{model_fingerprint(model_dir)}-{cache_type}-{config.max_seq_len}",
            extra={
                "cache_type": cache_type,
                "vram_cache_bytes": cache_bytes,
                "vram_weights_bytes": torch.cuda.memory_allocated() - cache_bytes,
                "causal_sdpa_fix": causal_fix,
                "path": str(model_dir),
            },
        )
        self._eos = {int(config.eos_token_id)} if config.eos_token_id is not None else set()

    def _byte_pieces(self, model_dir: Path) -> list[bytes] | None:
        """Each token's bytes, for byte-level vocabularies (None: decode through the tokenizer)."""
        tj = model_dir / "tokenizer.json"
        try:
            data = json.loads(tj.read_text())
            if data["model"]["type"] != "BPE" or "ByteLevel" not in json.dumps(data.get("decoder")):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        dec = _byte_decoder()
        vocab: dict[str, int] = data["model"]["vocab"]
        n = max([*vocab.values(), *(t["id"] for t in data.get("added_tokens", []))]) + 1
        pieces = [b""] * n
        for s, i in vocab.items():
            pieces[i] = bytes(dec.get(ch, 63) for ch in s)
        for t in data.get("added_tokens", []):
            pieces[t["id"]] = b"" if t.get("special") else t["content"].encode()
        return pieces

    # -- vocabulary -------------------------------------------------------------------------

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        if not text:
            return []
        ids = self.tokenizer.encode(text, add_bos=False, encode_special_tokens=special)
        return [int(i) for i in ids[0].tolist()]

    def detokenize(self, ids: Sequence[int]) -> bytes:
        if self._pieces is not None:
            return b"".join(self._pieces[i] if 0 <= i < len(self._pieces) else b"" for i in ids)
        out = self.tokenizer.decode(self._torch.tensor([list(ids)]), decode_special_tokens=False)
        return str(out[0] if isinstance(out, list) else out).encode()

    @property
    def eos_ids(self) -> set[int]:
        return set(self._eos)

    # -- the three primitives ---------------------------------------------------------------

    def _forward(self, ids: Sequence[int], want_logits: bool) -> None:
        t = self._torch.tensor([list(ids)], dtype=self._torch.long)
        try:
            with self._torch.inference_mode():
                out = self.model.forward(t, self.cache, preprocess_only=not want_logits, last_id_only=want_logits)
        except self._torch.cuda.OutOfMemoryError as exc:
            self.cache.current_seq_len = len(self._ids)  # the failed chunk is not in the cache
            raise EngineError("the GPU ran out of memory during a forward pass; lower prefill_chunk") from exc
        self._last = out[0, -1].float() if want_logits else None

    def _drop_from(self, n: int) -> None:
        self.cache.current_seq_len = n
        self._last = None

    def _last_logits(self) -> npt.NDArray[np.float32]:
        return np.asarray(self._last.cpu().numpy(), dtype=np.float32)

    def _greedy(self) -> int:
        return int(self._torch.argmax(self._last).item())  # on the GPU: no copy of the vocabulary per token

    # -- persistence ------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        n = len(self._ids)
        q_block = getattr(self.cache, "q_block", 0) or 1  # quantized caches store whole blocks
        stop = min(self.cache.max_seq_len, -(-n // q_block) * q_block)
        return {f"t{i}": t[:, :stop].contiguous() for i, t in enumerate(self.cache.all_tensors())}

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        meta = {"ids": json.dumps(self._ids), "cache_type": self.cache_type, "fingerprint": self.info.fingerprint}
        try:
            save_file(self._state(), str(path), metadata=meta)
        except OSError as exc:
            raise EngineError(f"could not write the cache to {path}: {exc}") from exc

    def load(self, path: Path) -> list[int]:
        from safetensors import safe_open

        self.truncate(0)
        try:
            with safe_open(str(path), framework="pt", device="cuda:0") as f, self._torch.inference_mode():
                meta = f.metadata() or {}
                if meta.get("cache_type") != self.cache_type or meta.get("fingerprint") != self.info.fingerprint:
                    raise EngineError(f"{path} holds another model's or cache type's state")
                ids = [int(i) for i in json.loads(meta["ids"])]
                tensors = self.cache.all_tensors()
                if len(ids) > self.cache.max_seq_len or set(f.keys()) != {f"t{i}" for i in range(len(tensors))}:
                    raise EngineError(f"{path} does not fit this cache")
                for i, t in enumerate(tensors):
                    saved = f.get_tensor(f"t{i}")
                    if saved.shape[0] != t.shape[0] or saved.shape[2:] != t.shape[2:] or saved.dtype != t.dtype:
                        raise EngineError(f"{path}: tensor {i} has the wrong shape or type")
                    t[:, : saved.shape[1]].copy_(saved)
        except EngineError:
            raise
        except Exception as exc:  # safetensors raises its own SafetensorError on a bad header
            raise EngineError(f"could not read the saved cache {path}: {exc}") from exc
        self.cache.current_seq_len = len(ids)
        self._ids = ids
        self._last = None
        self._logits_known = False
        return list(ids)

    def close(self) -> None:
        self.model.unload()
        self._torch.cuda.empty_cache()
