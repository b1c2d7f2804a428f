"""The exl2 engine on a GPU: throughput, warm-cache latency, snapshot restore, cache sizes, peers.

    python bench/gpu.py --dims 1.5b --json $OUT/gpu.json     # on the GPU machine (bench/README.md)

A random-weight model with Qwen2.5-Coder dimensions is made with transformers
and converted to EXL2 (4.0 bpw, reduced calibration), then measured in one run:
prefill and decode tokens/s at 1k, 32k and 128k cached tokens; completion TTFT
after a hot-file edit in 32k- and 128k-token workspaces for banked, stateless
and prefix-reuse; snapshot restore of 128k tokens; cache bytes per token for
each cache type; and the physical bounds to compare with.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import generate_project, report

DIMS = {
    "1.5b": dict(
        hidden_size=1536,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        intermediate_size=8960,
        vocab_size=151936,
    ),
    "0.5b": dict(
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        vocab_size=151936,
    ),
    "7b": dict(
        hidden_size=3584,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        intermediate_size=18944,
        vocab_size=152064,
    ),
}
HBM_BYTES_S = {"H100": 3.35e12, "H200": 4.8e12}  # spec sheet
PEAK_FP16_FLOPS = 989e12  # dense, H100/H200 SXM


def sync() -> None:
    import torch

    torch.cuda.synchronize()


def timed(fn: Any) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", choices=sorted(DIMS), default="1.5b")
    ap.add_argument("--work", type=Path, default=Path("/tmp/banked-gpu-bench"))
    ap.add_argument("--ctx", type=int, default=131072)
    ap.add_argument("--json", type=Path, default=Path("bench/results/gpu.json"))
    ap.add_argument("--rows", type=int, default=8, help="calibration rows for the conversion")
    ap.add_argument("--length", type=int, default=512, help="calibration tokens per row")
    args = ap.parse_args()

    import torch
    from banked.daemon.cli.convert import convert
    from banked.daemon.config import Config
    from banked.daemon.context.cursor import Cursor
    from banked.daemon.context.templates import template_for
    from banked.daemon.context.workspace import Workspace
    from banked.daemon.context.wscache import WorkspaceCache
    from banked.daemon.engines.base import common_prefix
    from banked.daemon.engines.exl2 import Exl2Engine
    from banked.daemon.engines.generation import Generation, TextStream, run_generation
    from banked.daemon.engines.tinyhf import write_tiny_qwen2_hf
    from banked.daemon.serving import snapshot

    data: dict[str, Any] = {"dims": args.dims, "device": torch.cuda.get_device_name(0)}
    rows: list[list[Any]] = []
    t0 = time.perf_counter()
    hf = args.work / f"hf-{args.dims}"
    exl2 = args.work / f"exl2-{args.dims}"
    if not exl2.exists():
        shutil.rmtree(hf, ignore_errors=True)
        write_tiny_qwen2_hf(hf, ctx=args.ctx, dims=DIMS[args.dims])

        def progress(line: str) -> None:
            if any(w in line for w in ("Measuring", "Quantizing", "Compiling", "error", "Error")):
                print(f"[{time.perf_counter() - t0:6.1f}s] {line}", flush=True)

        convert(hf, exl2, bits=4.0, head_bits=6, rows=args.rows, length=args.length, report=progress)
    data["convert_s"] = time.perf_counter() - t0
    weights_bytes = sum(p.stat().st_size for p in exl2.glob("*.safetensors"))
    d = DIMS[args.dims]
    h, layers, ff, vocab = d["hidden_size"], d["num_hidden_layers"], d["intermediate_size"], d["vocab_size"]
    kv = d["num_key_value_heads"] * (h // d["num_attention_heads"])
    n_params = layers * (h * h * 2 + 2 * h * kv + 3 * h * ff) + 2 * vocab * h
    data.update(weights_bytes=weights_bytes, params=n_params)

    # Cache bytes per token for each type (small contexts: the figure does not depend on it).
    for ct in ("fp16", "q8", "q6", "q4"):
        e = Exl2Engine(exl2, n_ctx=8192, cache_type=ct)
        data.setdefault("bytes_per_token", {})[ct] = e.info.bytes_per_token
        rows.append([f"cache bytes/token {ct}", e.info.bytes_per_token, "", ""])
        e.close()
        del e
        torch.cuda.empty_cache()

    e = Exl2Engine(exl2, n_ctx=args.ctx, cache_type="q4", chunk=2048)
    data["vram"] = {k: e.info.extra[k] for k in ("vram_weights_bytes", "vram_cache_bytes")}
    gen = torch.Generator().manual_seed(0)
    filler = torch.randint(0, 256, (args.ctx,), generator=gen).tolist()
    gpu = data["device"].split()[1] if len(data["device"].split()) > 1 else "H100"
    bw = HBM_BYTES_S.get(gpu, 3.35e12)
    for at in (1024, 32768, args.ctx - 4096):
        e.truncate(0)
        e.prefill(filler[:at])
        n = 2048
        dt = timed(lambda: e.prefill(filler[at : at + n]))  # noqa: B023
        e.truncate(at)
        e.logits()
        steps = 64
        dt_dec = timed(lambda: list(e.generate(steps, set())))  # noqa: B023
        pre, dec = n / dt, steps / dt_dec
        cache_read = e.info.bytes_per_token * at
        bound_dec = bw / (weights_bytes + cache_read)
        bound_pre = PEAK_FP16_FLOPS / (2 * n_params)
        data.setdefault("throughput", {})[at] = {
            "prefill_tok_s": pre,
            "decode_tok_s": dec,
            "decode_bound_tok_s": bound_dec,
            "decode_vs_bound": dec / bound_dec,
            "prefill_bound_tok_s": bound_pre,
        }
        rows.append(
            [f"prefill @ {at:,} cached", f"{pre:,.0f} tok/s", f"bound {bound_pre:,.0f}", f"{pre / bound_pre:.0%}"]
        )
        rows.append(
            [f"decode @ {at:,} cached", f"{dec:,.1f} tok/s", f"bound {bound_dec:,.0f}", f"{dec / bound_dec:.0%}"]
        )

    # Snapshot of ~128k tokens: write, then restore into the same engine.
    e.truncate(0)
    e.prefill(filler[: args.ctx - 4096])
    root = args.work / "snapws"
    root.mkdir(exist_ok=True)
    os.environ["BANKED_CACHE_DIR"] = str(args.work / "cache")
    t_save = timed(lambda: snapshot.save(e, root, list(e.cached)))
    e.truncate(0)
    t_load = timed(lambda: snapshot.load(e, root))
    size = sum(f.stat().st_size for f in snapshot.snapshot_dir(root).glob("kv-*.bin"))
    data["snapshot"] = {"tokens": len(e.cached), "bytes": size, "save_s": t_save, "restore_s": t_load}
    rows.append(
        [
            f"snapshot restore {len(e.cached):,} tokens",
            f"{t_load:.2f} s",
            f"{size / 2**30:.2f} GiB",
            f"save {t_save:.2f} s",
        ]
    )

    # Warm-cache completion after a hot-file edit, against stateless and prefix-reuse.
    cfg = Config(prefill_chunk=2048, n_ctx=args.ctx, suffix_tokens=64)
    tpl = template_for(e)
    for size_tok in (32768, 120000 if args.ctx >= 131072 else args.ctx // 2):
        ws_root = args.work / f"ws{size_tok}"
        shutil.rmtree(ws_root, ignore_errors=True)
        files = generate_project(ws_root, int(size_tok / 3.5))  # byte-level vocab: ~1 token a byte
        ws = Workspace(ws_root)
        ws.scan()
        e.truncate(0)
        wc = WorkspaceCache(ws, e, tpl, cfg)
        t_cold = timed(wc.sync)
        hot = files[-1]
        rel = hot.relative_to(ws_root).as_posix()
        text = hot.read_text()
        lines = text.split("\n")
        ln = 8
        run_generation(
            wc, Generation(wc.fim_tail(rel, Cursor.at(text, ln, len(lines[ln]))), tpl.fim_stops, 1, TextStream(e))
        )
        lines[ln - 2] = lines[ln - 2] + "  # edited"
        text = "\n".join(lines)
        hot.write_text(text)
        ws.refresh({rel})
        wc.invalidate()
        g = Generation(wc.fim_tail(rel, Cursor.at(text, ln, len(lines[ln]))), set(), 1, TextStream(e))
        sync()
        run_generation(wc, g)
        sync()
        banked_ms = (g.ttft_s or 0) * 1000
        prompt = list(wc.plan().ids) + wc.fim_tail(rel, Cursor.at(text, ln, len(lines[ln])))

        def peer(reuse: bool) -> tuple[float, int]:
            n = min(common_prefix(e.cached, prompt), len(prompt) - 1) if reuse else 0  # noqa: B023
            t = time.perf_counter()
            e.truncate(n)
            e.prefill(prompt[n:])  # noqa: B023
            next(e.generate(1, set()), None)
            sync()
            return (time.perf_counter() - t) * 1000, len(prompt) - n  # noqa: B023

        stateless_ms, stateless_n = peer(False)
        # prefix-reuse's warm state: the prompt before the edit, then the edited one.
        lines[ln - 2] = lines[ln - 2] + " again"
        hot.write_text("\n".join(lines))
        ws.refresh({rel})
        wc.invalidate()
        prompt = list(wc.plan().ids) + wc.fim_tail(rel, Cursor.at("\n".join(lines), ln, len(lines[ln])))
        reuse_ms, reuse_n = peer(True)
        tok = len(wc.plan().ids)
        data.setdefault("workspace", {})[tok] = {
            "cold_prefill_s": t_cold,
            "banked_ttft_ms": banked_ms,
            "banked_prefilled": g.prefilled_tokens,
            "stateless_ttft_ms": stateless_ms,
            "stateless_prefilled": stateless_n,
            "prefix_reuse_ttft_ms": reuse_ms,
            "prefix_reuse_prefilled": reuse_n,
            "speedup_vs_stateless": stateless_ms / max(banked_ms, 1e-6),
        }
        rows.append(
            [
                f"hot-edit TTFT, {tok:,}-token workspace",
                f"banked {banked_ms:.1f} ms ({g.prefilled_tokens} tok)",
                f"stateless {stateless_ms:.0f} ms",
                f"prefix-reuse {reuse_ms:.1f} ms ({reuse_n} tok)",
            ]
        )

    report(
        f"banked exl2 — {args.dims} dims, 4.0 bpw, {data['device']}",
        ["measure", "value", "vs", "note"],
        rows,
        data,
        args.json,
    )


if __name__ == "__main__":
    main()
