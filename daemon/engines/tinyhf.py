"""A tiny random Qwen2 model in HF format with a byte-level BPE tokenizer, for the exl2 tests.

Made on the GPU machine (transformers + tokenizers), then converted to EXL2 with
exllamav2's converter through `banked.daemon.cli.convert`.
"""

from __future__ import annotations

import json
from pathlib import Path

from banked.daemon.engines.base import gpt2_byte_symbols
from banked.daemon.engines.tinymodel import SPECIALS


def write_tokenizer(out: Path) -> int:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {s: i for i, s in enumerate(gpt2_byte_symbols())}
    vocab["ĠĠ"] = 256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "Ġ")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": None,
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "add_bos_token": False,
                "model_max_length": 32768,
            }
        )
    )
    return 257 + len(SPECIALS)


def write_tiny_qwen2_hf(
    out: Path,
    *,
    hidden: int = 512,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 1024,
    vocab_pad: int = 384,
    ctx: int = 32768,
    seed: int = 0,
    dims: dict[str, int] | None = None,
) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    n_vocab = write_tokenizer(out)
    eot = 257
    d = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        vocab_size=max(vocab_pad, n_vocab),
    )
    d.update(dims or {})
    cfg = Qwen2Config(
        **d,
        max_position_embeddings=ctx,
        rope_theta=1_000_000.0,
        tie_word_embeddings=False,
        bos_token_id=eot,
        eos_token_id=eot,
        torch_dtype="float16",
    )
    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(cfg).half()
    model.save_pretrained(out, safe_serialization=True)
    return out
