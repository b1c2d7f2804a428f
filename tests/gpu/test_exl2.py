"""The exl2 engine on a real GPU, on a tiny random Qwen2 model converted to EXL2 by the tests."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from banked.daemon import paths
from banked.daemon.config import Config
from banked.daemon.context.cursor import Cursor
from banked.daemon.context.templates import template_for
from banked.daemon.context.workspace import Workspace
from banked.daemon.context.wscache import WorkspaceCache
from banked.daemon.engines.generation import Generation, TextStream, run_generation

FP16_TOL = 2e-2  # logits in fp16: chunked and token-by-token sum in other orders


def engine(model: Path, cache_type: str = "fp16", chunk: int = 128, causal_fix: bool = True):  # type: ignore[no-untyped-def]
    from banked.daemon.engines.exl2 import Exl2Engine

    return Exl2Engine(model, n_ctx=4096, cache_type=cache_type, chunk=chunk, causal_fix=causal_fix)


def ids(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(256) for _ in range(n)]


def test_chunked_prefill_equals_token_by_token(exl2_model: Path) -> None:
    seq = ids(300)
    chunked = engine(exl2_model, chunk=128)
    chunked.prefill(seq)
    one = engine(exl2_model, chunk=1)
    one.prefill(seq)
    a, b = chunked.logits(), one.logits()
    assert int(np.argmax(a)) == int(np.argmax(b))
    assert float(np.abs(a - b).max()) <= FP16_TOL
    assert chunked.info.extra["causal_sdpa_fix"] is True


def test_without_the_causal_fix_chunks_see_their_future(exl2_model: Path) -> None:
    """The trap the engine fixes: exllamav2 0.3.2's SDPA path without flash-attn is not causal."""
    from exllamav2 import attn

    if not attn.has_lower_right_sdpa or attn.has_flash_attn:
        pytest.skip("this torch/flash-attn combination does not take the broken path")
    seq = ids(300)
    broken = engine(exl2_model, chunk=128, causal_fix=False)
    broken.prefill(seq)
    one = engine(exl2_model, chunk=1, causal_fix=False)
    one.prefill(seq)
    assert float(np.abs(broken.logits() - one.logits()).max()) > 10 * FP16_TOL


@pytest.mark.parametrize("cache_type", ["fp16", "q4"])
def test_incremental_updates_equal_a_fresh_prefill(exl2_model: Path, tmp_path: Path, cache_type: str) -> None:
    rng = random.Random(1)
    root = tmp_path / "ws"
    root.mkdir()
    for i in range(6):
        (root / f"m{i}.py").write_text("\n".join(f"def f{i}_{j}(x):\n    return x + {j}" for j in range(8)) + "\n")
        os.utime(root / f"m{i}.py", (1_700_000_000 + i, 1_700_000_000 + i))
    e = engine(exl2_model, cache_type)
    fresh = engine(exl2_model, cache_type, chunk=2048)
    cfg = Config(prefill_chunk=128, n_ctx=4096)
    ws = Workspace(root)
    ws.scan()
    wc = WorkspaceCache(ws, e, template_for(e), cfg)
    wc.sync()
    tol = FP16_TOL if cache_type == "fp16" else 0.25  # Q4: what later tokens see depends on chunking
    for step in range(8):
        rel = f"m{rng.randrange(6)}.py"
        p = root / rel
        lines = p.read_text().splitlines()
        lines[rng.randrange(len(lines))] = f"    return x * {step}"
        p.write_text("\n".join(lines) + "\n")
        os.utime(p, (1_700_000_100 + step, 1_700_000_100 + step))
        ws.refresh({rel})
        wc.invalidate()
        if step % 2:
            wc.sync()
        else:
            text = p.read_text()
            g = Generation(wc.fim_tail(rel, Cursor.at(text, 3, 4)), set(), 4, TextStream(e))
            assert run_generation(wc, g)
        seq = list(e.cached)
        inc = e.logits()
        fresh.truncate(0)
        fresh.prefill(seq)
        ref = fresh.logits()
        diff = float(np.abs(inc - ref).max())
        assert diff <= tol, f"step {step}: max |Δ| {diff}"
        top2 = np.sort(ref)[-2:]
        if cache_type == "fp16" or top2[1] - top2[0] > 2 * diff:
            # A random model's logits are nearly flat: under Q4 noise only a clear winner must agree.
            assert int(np.argmax(inc)) == int(np.argmax(ref)), f"step {step}"


@pytest.mark.parametrize("cache_type", ["fp16", "q8", "q6", "q4"])
def test_snapshot_round_trip(exl2_model: Path, tmp_path: Path, cache_type: str) -> None:
    from banked.daemon.engines.base import EngineError

    a = engine(exl2_model, cache_type)
    a.prefill(ids(777))
    a.save(tmp_path / "kv.safetensors")
    b = engine(exl2_model, cache_type)
    assert b.load(tmp_path / "kv.safetensors") == list(a.cached)
    assert int(np.argmax(a.logits())) == int(np.argmax(b.logits()))
    assert float(np.abs(a.logits() - b.logits()).max()) <= FP16_TOL
    other = engine(exl2_model, "fp16" if cache_type != "fp16" else "q4")
    with pytest.raises(EngineError):
        other.load(tmp_path / "kv.safetensors")
    (tmp_path / "bad.safetensors").write_bytes((tmp_path / "kv.safetensors").read_bytes()[:1000])
    with pytest.raises(EngineError):
        b.load(tmp_path / "bad.safetensors")


def test_cancellation_between_chunks_and_tokens(exl2_model: Path) -> None:
    e = engine(exl2_model, chunk=64)
    calls = {"n": 0}

    def stop_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    done = e.prefill(ids(1000), should_stop=stop_after_two)
    assert done == 3 * 64 and len(e.cached) == 192
    gen = []
    for t in e.generate(100, set(), should_stop=lambda: len(gen) >= 5):
        gen.append(t)
    assert len(gen) == 5


def test_daemon_on_exl2(exl2_model: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        **paths.isolated_env(tmp_path),
        "BANKED_ENGINE": "auto",
        "BANKED_MODEL": str(exl2_model),
        "BANKED_N_CTX": "4096",
    }
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.py").write_text("import math\n\n\ndef area(r):\n    return \n")
    (ws / "b.py").write_text("def twice(x):\n    return 2 * x\n")

    def banked(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "banked.daemon", *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    try:
        w = json.loads(banked("warm", str(ws), "--json"))
        assert w["files"] == 2 and w["prefilled_tokens"] == w["tokens"]
        r = json.loads(banked("complete", f"{ws}/a.py:5:12", "--json", "--max-tokens", "4"))
        assert r["engine"] == "exl2" and r["reused_tokens"] >= w["tokens"]
        st = json.loads(banked("status", "--json"))
        assert st["engine"]["extra"]["cache_type"] == "q4" and st["engine"]["extra"]["vram_weights_bytes"] > 0
        assert "VRAM" in banked("status")
    finally:
        subprocess.run([sys.executable, "-m", "banked.daemon", "stop"], env=env, timeout=120)
