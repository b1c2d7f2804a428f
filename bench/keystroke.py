"""What one keystroke costs, for each way of laying out the FIM tail, side by side in one run.

    python bench/keystroke.py [--source DIR] [--variants psm:64@40,spm:64@40] [--json bench/results/keystroke.json]

A package is the warm workspace prefix (as banked serves it); then a line of one of its files is typed again,
one character at a time, and each keystroke's completion runs through banked's code path (FIM tail after
the warm prefix, run_generation, 8 tokens of answer). A variant is `order:suffix_tokens` (order psm or spm,
suffix window in tokens) and `prefix_lines` with `@N` (e.g. `psm:64@40`). Reported per variant: what the
first keystroke on the line costs (the tail moves there: a jump), then tokens re-prefilled per keystroke and
time to first token over the keystrokes after the first. Each
variant runs on the same engine after the same workspace prefix (prefilled once), so only the tail differs.
The quality side of the same variants: bench/quality.py --fim-order / --suffix-tokens / --prefix-lines.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path
from typing import Any

from banked.daemon import config
from banked.daemon.context.cursor import Cursor
from banked.daemon.context.templates import template_for
from banked.daemon.context.workspace import Workspace
from banked.daemon.context.wscache import WorkspaceCache
from banked.daemon.engines import model_store
from banked.daemon.engines.generation import Generation, TextStream, run_generation
from banked.daemon.engines.llamacpp import LlamaCppEngine
from common import report


def variant(spec: str) -> tuple[str, int, int]:
    head, _, lines = spec.partition("@")
    order, _, suffix = head.partition(":")
    return order, int(suffix or 64), int(lines or 40)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    spec = importlib.util.find_spec("pluggy")
    p.add_argument("--source", default=str(Path(spec.origin).parent) if spec and spec.origin else None)
    p.add_argument("--variants", default="psm:64@40,psm:16@40,spm:64@40,psm:64@1000")
    p.add_argument("--n-ctx", type=int, default=32768)
    p.add_argument("--model", help="a GGUF file (default: the embedded model)")
    p.add_argument("--json", default="bench/results/keystroke.json")
    args = p.parse_args()
    model = Path(args.model) if args.model else model_store.ensure_default_model()
    ws = Workspace(Path(args.source))
    ws.scan()
    # The longest file: its middle line is retyped (the file itself is in the prefix too, as saved).
    path = max((f for f in ws.files if f.endswith(".py")), key=lambda f: len(ws.files[f].text))
    lines = ws.files[path].text.split("\n")
    target = next(i for i in range(len(lines) // 2, len(lines)) if len(lines[i].strip()) >= 24)
    typed = lines[target]
    data: dict[str, Any] = {"source": args.source, "file": path, "line": target + 1, "typed": typed, "variants": {}}
    rows = []
    engine = LlamaCppEngine(model, args.n_ctx, 0, 256)  # one engine: the variants share the workspace prefix
    for v in args.variants.split(","):
        order, suffix, prefix_lines = variant(v)
        cfg = config.Config(
            fim_order=order,
            suffix_tokens=suffix,
            eol_suffix_tokens=suffix,  # the variant's window wherever the cursor is
            prefix_lines=prefix_lines,
            focus_tokens=0,
        )
        wc = WorkspaceCache(ws, engine, template_for(engine), cfg)
        t0 = time.perf_counter()
        n = wc.sync()
        print(f"{v}: prefilled {n:,} of {len(wc.plan().ids):,} workspace tokens in {time.perf_counter() - t0:.0f}s")
        indent = len(typed) - len(typed.lstrip())
        costs = []
        for k in range(indent, len(typed) + 1):
            buf = "\n".join([*lines[:target], typed[:k], *lines[target + 1 :]])
            g = Generation(wc.fim_tail(path, Cursor.at(buf, target, k), 8), wc.tpl.fim_stops, 8, TextStream(engine))
            run_generation(wc, g)
            costs.append(g.metrics())
        jump, costs = costs[0], costs[1:]  # the first keystroke moves the tail here: what a jump costs
        s = {
            "jump_prefilled_tokens": jump["prefilled_tokens"],
            "jump_ttft_ms": jump["ttft_ms"],
            "keystrokes": len(costs),
            "prefilled_tokens_mean": statistics.mean(c["prefilled_tokens"] for c in costs),
            "ttft_ms_mean": statistics.mean(c["ttft_ms"] for c in costs),
            "ttft_ms_p50": statistics.median(c["ttft_ms"] for c in costs),
            "workspace_tokens": len(wc.plan().ids),
        }
        data["variants"][v] = s
        rows.append(
            [
                v,
                s["jump_prefilled_tokens"],
                s["jump_ttft_ms"],
                s["keystrokes"],
                s["prefilled_tokens_mean"],
                s["ttft_ms_mean"],
                s["ttft_ms_p50"],
            ]
        )
    engine.close()
    first = next(iter(data["variants"].values()))
    report(
        f"a keystroke by FIM layout: {path}:{target + 1} retyped, {first['workspace_tokens']:,} workspace tokens",
        [
            "variant (order:suffix@prefix lines)",
            "jump: re-prefilled",
            "jump: TTFT ms",
            "keys",
            "re-prefilled tokens/key",
            "TTFT ms mean",
            "TTFT ms p50",
        ],
        rows,
        data,
        Path(args.json),
    )


if __name__ == "__main__":
    main()
