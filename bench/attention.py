"""What makes deep prefill faster on this machine: llama.cpp's flash attention, and a request's prefill step.

    python bench/attention.py [--depth 6000] [--chunks 64,128,256,512] [--json bench/results/attention.json]

On a CPU the first completion at a new place costs ~500 tokens of prefill deep in the workspace (20 s at 16k
tokens on 2 cores, bench/typing.py), and attention over the cached tokens is a large share of each token's
cost there. banked builds its llama.cpp context with flash attention off (llama-cpp-python's default); this
measures both settings side by side on the embedded model and real code (the installed pluggy package):
`--depth` tokens prefilled in banked's 64-token chunks, then 512 more (the "deep" rate: what a jump pays),
then 32 greedy decodes, all through banked's LlamaCppEngine. Each setting loads its own engine; nothing else
changes.

Then the prefill step (`--chunks`): one engine (flash attention off) is warmed to `--depth` once, and the
same 512 tokens are prefilled after it in steps of each size, twice in turn (the noise shows in the spread).
banked steps in 64s for background work (anything yields to a request within one step); `request_chunk` sets
a request's own step (default: the same 64, since larger steps were no faster on 2 cores).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path
from typing import Any

from banked.daemon.engines import model_store
from banked.daemon.engines.llamacpp import LlamaCppEngine
from common import print_rows, report

CHUNK = 64


def measure(model: Path, text: str, depth: int, flash: bool, threads: int) -> dict[str, float]:
    """Through banked's own engine (its chunked prefill and greedy decoding), with flash attention as asked."""
    engine = LlamaCppEngine(model, depth + 1024, threads, CHUNK, flash_attn=flash)
    try:
        toks = engine.tokenize(text)
        if len(toks) < depth + 512:
            raise SystemExit(f"the source has {len(toks)} tokens; --depth at most {len(toks) - 512}")
        t0 = time.perf_counter()
        engine.catch_up(toks[:depth])
        t1 = time.perf_counter()
        engine.catch_up(toks[: depth + 512])
        t2 = time.perf_counter()
        decoded = sum(1 for _ in engine.generate(32, set()))
        t3 = time.perf_counter()
    finally:
        engine.close()
    return {
        "warm_ms_per_token": 1000 * (t1 - t0) / depth,
        "deep_prefill_ms_per_token": 1000 * (t2 - t1) / 512,
        "decode_ms_per_token": 1000 * (t3 - t2) / decoded,
    }


def steps(model: Path, text: str, depth: int, chunks: list[int], threads: int) -> dict[str, list[float]]:
    """ms per token of 512 tokens prefilled after `depth`, per step size, each measured twice in turn."""
    engine = LlamaCppEngine(model, depth + 1024, threads, CHUNK, burst=max(chunks))
    out: dict[str, list[float]] = {str(c): [] for c in chunks}
    try:
        toks = engine.tokenize(text)[: depth + 512]
        engine.catch_up(toks[:depth], chunk=max(chunks))
        for _ in range(2):
            for c in chunks:
                engine.truncate(depth)
                t0 = time.perf_counter()
                engine.catch_up(toks, chunk=c)
                out[str(c)].append(1000 * (time.perf_counter() - t0) / 512)
    finally:
        engine.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    spec = importlib.util.find_spec("pluggy")
    p.add_argument("--source", default=str(Path(spec.origin).parent) if spec and spec.origin else None)
    p.add_argument("--depth", type=int, default=6000)
    p.add_argument("--threads", type=int, default=0, help="0: all cores")
    p.add_argument("--chunks", default="64,128,256,512", help="prefill steps to compare (empty: none)")
    p.add_argument("--no-flash", action="store_true", help="skip the flash attention comparison")
    p.add_argument("--model", help="a GGUF file (default: the embedded model)")
    p.add_argument("--json", default="bench/results/attention.json")
    args = p.parse_args()
    import os

    model = Path(args.model) if args.model else model_store.ensure_default_model()
    text = "".join(f.read_text() for f in sorted(Path(args.source).rglob("*.py")))
    threads = args.threads or os.cpu_count() or 1
    data: dict[str, Any] = {"source": args.source, "model": str(model), "depth": args.depth, "threads": threads}
    out = Path(args.json)
    if args.chunks:
        chunks = [int(c) for c in args.chunks.split(",")]
        data["steps"] = steps(model, text, args.depth, chunks, threads)
        base = statistics.mean(data["steps"][str(chunks[0])])
        print_rows(
            f"prefill {args.depth:,}–{args.depth + 512:,} by step size, {threads} threads",
            ["step (tokens)", "ms/token (two runs)", "mean", f"speed-up over {chunks[0]}"],
            [
                [c, " / ".join(f"{v:.1f}" for v in runs), statistics.mean(runs), f"{base / statistics.mean(runs):.2f}"]
                for c, runs in ((c, data["steps"][str(c)]) for c in chunks)
            ],
        )
    if args.no_flash:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2))
        return
    for flash in (False, True):
        data["flash_on" if flash else "flash_off"] = measure(model, text, args.depth, flash, threads)
    off, on = data["flash_off"], data["flash_on"]
    rows = [
        [name, off[key], on[key], f"{on[key] / off[key]:.2f}"]
        for name, key in (
            (f"prefill 0–{args.depth:,} (ms/token)", "warm_ms_per_token"),
            (f"prefill {args.depth:,}–{args.depth + 512:,} (ms/token)", "deep_prefill_ms_per_token"),
            ("decode (ms/token)", "decode_ms_per_token"),
        )
    ]
    report(
        f"llama.cpp flash attention on {model.name}, {threads} threads",
        ["what", "off (banked's setting)", "on", "on / off"],
        rows,
        data,
        out,
    )


if __name__ == "__main__":
    main()
