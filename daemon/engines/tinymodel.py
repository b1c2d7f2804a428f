"""Write a tiny random qwen2 GGUF that llama.cpp loads: the tests' model.

A byte-level `gpt2` vocabulary (the 256 GPT-2 byte symbols, one merge so
llama.cpp accepts it) plus the Qwen2.5-Coder special tokens as CONTROL, so the
FIM and chat templates tokenize exactly as they do on the real model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from banked.daemon.engines.base import gpt2_byte_symbols

SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]


def write_tiny_qwen2(
    path: Path,
    *,
    d: int = 64,
    layers: int = 2,
    ctx: int = 32768,
    seed: int = 0,
    extra_merge: tuple[str, str] | None = None,
    ascii_only: bool = False,
) -> Path:
    """`extra_merge`: one more merge (and its token), so the vocabulary splits some text differently: a model
    of "another family" for the remote engine's tokenizer check. `ascii_only`: the model never writes a byte
    above 0x7f, so its text is always whole UTF-8 (a streaming server sends text whole characters at a time)."""
    import gguf

    rng = np.random.default_rng(seed)
    merged = ["".join(extra_merge)] if extra_merge else []
    tokens = [*gpt2_byte_symbols(), "ĠĠ", *merged, *SPECIALS]
    types = [gguf.TokenType.NORMAL] * (257 + len(merged)) + [gguf.TokenType.CONTROL] * len(SPECIALS)
    n_vocab = len(tokens)
    n_head, n_head_kv, ff = 4, 2, 2 * d
    head_dim = d // n_head

    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("tiny-qwen2-test")
    w.add_context_length(ctx)
    w.add_embedding_length(d)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["Ġ Ġ", *([" ".join(extra_merge)] if extra_merge else [])])
    eot = tokens.index("<|endoftext|>")
    w.add_bos_token_id(eot)
    w.add_eos_token_id(eot)
    w.add_add_bos_token(False)

    def t(name: str, *shape: int, scale: float = 0.5) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    t("token_embd.weight", n_vocab, d, scale=1.0)
    for i in range(layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(d, dtype=np.float32))
        t(p + "attn_q.weight", d, d)
        t(p + "attn_q.bias", d, scale=0.1)
        t(p + "attn_k.weight", n_head_kv * head_dim, d)
        t(p + "attn_k.bias", n_head_kv * head_dim, scale=0.1)
        t(p + "attn_v.weight", n_head_kv * head_dim, d)
        t(p + "attn_v.bias", n_head_kv * head_dim, scale=0.1)
        t(p + "attn_output.weight", d, d)
        w.add_tensor(p + "ffn_norm.weight", np.ones(d, dtype=np.float32))
        t(p + "ffn_gate.weight", ff, d)
        t(p + "ffn_up.weight", ff, d)
        t(p + "ffn_down.weight", d, ff)
    w.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    # Special tokens get all-zero output rows: their logit is 0 while some byte's is always higher, so
    # greedy decoding never stops early by chance and streaming tests see the length they ask for.
    out = (rng.standard_normal((n_vocab, d)) * 0.5).astype(np.float32)
    out[257:] = 0.0
    if ascii_only:
        out[0x80:0x100] = 0.0
    w.add_tensor("output.weight", out)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
