"""Whole-workspace warm cache vs. its peers, on one engine and model, in one run.

    python bench/warm.py [--workspace DIR] [--tokens 8000] [--json bench/results/warm.json]

banked (a real daemon over its socket) is measured on: a cold full prefill; a
completion right after a one-line edit in the hot file; after an edit in a cold
file in the middle of the order; after a daemon restart (snapshot restore); and
per keystroke while typing a line. The peers run in this process on the same
engine class and model:

- stateless:    every request prefills its whole prompt (workspace + FIM).
- prefix-reuse: context chunks (files by path) then the FIM; only the common
                prefix with the previous request is reused (llama.vim, TabbyAPI).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from banked.daemon import config, paths
from banked.daemon.context.templates import template_for
from banked.daemon.engines import DEFAULT_CHUNK, model_store
from banked.daemon.engines.base import common_prefix
from banked.daemon.engines.llamacpp import LlamaCppEngine
from common import Daemon, generate_project, report


class Peer:
    """A prompt-per-request strategy on a bare engine: what banked is compared with."""

    def __init__(self, engine: LlamaCppEngine, root: Path, reuse: bool):
        self.e, self.root, self.reuse = engine, root, reuse
        self.tpl = template_for(engine)

    def prompt(self, active: Path, text: str, line: int, col: int, suffix_tokens: int) -> list[int]:
        ids = self.tpl.header(self.root.name)
        for p in sorted(self.root.rglob("*.py")):
            if p != active:
                ids += self.tpl.file(p.relative_to(self.root).as_posix(), p.read_text())
        lines = text.split("\n")
        before = "\n".join([*lines[:line], lines[line][:col]])
        after = self.tpl.tokens("\n".join([lines[line][col:], *lines[line + 1 :]]))[:suffix_tokens]
        return ids + self.tpl.fim(active.relative_to(self.root).as_posix(), self.tpl.tokens(before), after)

    def complete(self, seq: list[int]) -> dict[str, float]:
        t0 = time.perf_counter()
        n = common_prefix(self.e.cached, seq) if self.reuse else 0
        n = min(n, len(seq) - 1)
        self.e.truncate(n)
        self.e.prefill(seq[n:])
        next(self.e.generate(1, set()), None)
        ttft = time.perf_counter() - t0
        self.e.truncate(len(seq))
        return {"ttft_ms": ttft * 1000, "prefilled_tokens": len(seq) - n, "reused_tokens": n}


def edit_line(path: Path, lineno: int, new: str) -> str:
    lines = path.read_text().split("\n")
    lines[lineno] = new
    text = "\n".join(lines)
    path.write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, help="any directory (default: a generated Python project)")
    ap.add_argument("--tokens", type=int, default=8000, help="size of the generated project")
    ap.add_argument("--keystrokes", type=int, default=10)
    ap.add_argument("--json", type=Path, default=Path("bench/results/warm.json"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="banked-bench-"))
    src = args.workspace or tmp / "project"
    root = tmp / "ws"
    if args.workspace:
        import shutil

        shutil.copytree(src, root, symlinks=True)
    else:
        generate_project(root, args.tokens)
    files = sorted(root.rglob("*.py"), key=lambda p: (p.stat().st_mtime_ns, p.as_posix()))
    hot, middle = files[-1], files[len(files) // 2]
    model = model_store.ensure_default_model()
    env = {
        **paths.isolated_env(tmp),
        "BANKED_MODELS_DIR": str(model.parent),
        "BANKED_N_CTX": str(max(4096, args.tokens * 2 + 4096)),
    }
    os.environ.update(env)
    cfg = config.load()
    d = Daemon(env).start()
    rows: list[list[Any]] = []
    data: dict[str, Any] = {"workspace": str(src), "model": str(model), "scenarios": {}}

    def put(name: str, strategy: str, r: dict[str, Any], note: str = "") -> None:
        data["scenarios"].setdefault(name, {})[strategy] = r
        rows.append(
            [
                name,
                strategy,
                r.get("ttft_ms", r.get("seconds", 0) * 1000),
                r.get("prefilled_tokens", ""),
                r.get("reused_tokens", ""),
                note,
            ]
        )

    def complete(path: Path, line: int, col: int, text: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"path": str(path), "line": line, "col": col, "max_tokens": 1}
        if text is not None:
            params["text"] = text
        return d.call("complete", params)  # type: ignore[no-any-return]

    print(f"workspace {root}: {len(files)} files; cold prefill on 2 cores takes minutes…", flush=True)
    cold = d.call("warm", {"root": str(root)})
    data["tokens"] = cold["tokens"]
    put("cold full prefill", "banked", {**cold, "ttft_ms": cold["seconds"] * 1000})

    # 1. A one-line edit in the hot file (the one being worked on), saved; then a completion in it.
    hot_lines = hot.read_text().split("\n")
    ln = next(i for i, s in enumerate(hot_lines) if s.strip().startswith("total = 0.0"))
    cur = (ln + 1, len(hot_lines[ln + 1]))
    complete(hot, *cur)  # the user was already working here, as in the peers' warm state
    edit_line(hot, ln, "    total = 0.0  # running sum")
    r = complete(hot, *cur)
    put("hot-file edit", "banked", r)
    d.call("warm", {"root": str(root)})  # let the background catch-up finish before the next scenario

    # 2. An edit in a cold file in the middle of the order.
    mid_lines = middle.read_text().split("\n")
    edit_line(middle, 0, mid_lines[0].replace('"""', '""" (edited)', 1))
    time.sleep(cfg.debounce_s + 0.5)  # the watcher has seen it: a background re-prefill is under way
    r = complete(hot, *cur)
    put("cold-file edit (middle)", "banked", r, "preempts the background re-prefill; uses the prefix before the edit")
    t0 = time.perf_counter()
    catch = d.call("warm", {"root": str(root)})
    put(
        "  background re-prefill",
        "banked",
        {"seconds": time.perf_counter() - t0, "prefilled_tokens": catch["prefilled_tokens"]},
    )

    # 3. Typing a line, one keystroke per completion (the unsaved buffer goes as `text`).
    typed = "    scale = scale * 2"[: args.keystrokes + 4]
    base_lines = hot.read_text().split("\n")
    ks = []
    for k in range(5, len(typed) + 1):
        lines = [*base_lines[: ln + 1], typed[:k], *base_lines[ln + 1 :]]
        ks.append(complete(hot, ln + 1, k, "\n".join(lines)))
    ks = ks[1:]  # the first one moves the cursor to the new line
    avg = {k: sum(x[k] for x in ks) / len(ks) for k in ("ttft_ms", "prefilled_tokens", "reused_tokens")}
    put(
        "per keystroke (avg)",
        "banked",
        {**avg, "max_prefilled": max(x["prefilled_tokens"] for x in ks)},
        f"max {max(x['prefilled_tokens'] for x in ks)} re-prefilled; bound {1 + cfg.suffix_tokens + 8}",
    )

    # 4. Restart: stop (snapshot written), start, warm (restore), complete.
    d.stop()
    t0 = time.perf_counter()
    d.start()
    restored = d.call("warm", {"root": str(root)})
    restore_s = time.perf_counter() - t0
    put("restart: start + restore", "banked", {**restored, "seconds": restore_s})
    put("restart: first completion", "banked", complete(hot, *cur))
    d.stop()

    # Peers, same engine class and model, in this process (the daemon is stopped: no contention).
    e = LlamaCppEngine(
        model, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, chunk=cfg.prefill_chunk or DEFAULT_CHUNK["llamacpp"]
    )
    text = hot.read_text()
    stateless, reuse = Peer(e, root, reuse=False), Peer(e, root, reuse=True)
    s = stateless.complete(stateless.prompt(hot, text, *cur, cfg.suffix_tokens))
    for name in ("hot-file edit", "cold-file edit (middle)", "restart: first completion"):
        put(name, "stateless", s, "whole prompt every time")
    # The stateless run left the full prompt cached: exactly prefix-reuse's warm state.
    text = edit_line(hot, ln, "    total = 0.0  # running sum, edited again")
    put("hot-file edit", "prefix-reuse", reuse.complete(reuse.prompt(hot, text, *cur, cfg.suffix_tokens)))
    ks2 = []
    base_lines = text.split("\n")
    for k in range(5, len(typed) + 1):
        lines = [*base_lines[: ln + 1], typed[:k], *base_lines[ln + 1 :]]
        ks2.append(reuse.complete(reuse.prompt(hot, "\n".join(lines), ln + 1, k, cfg.suffix_tokens)))
    ks2 = ks2[1:]
    put(
        "per keystroke (avg)",
        "prefix-reuse",
        {k: sum(x[k] for x in ks2) / len(ks2) for k in ("ttft_ms", "prefilled_tokens", "reused_tokens")},
    )
    edit_line(middle, 0, middle.read_text().split("\n")[0] + "  # again")
    put(
        "cold-file edit (middle)",
        "prefix-reuse",
        reuse.complete(reuse.prompt(hot, text, *cur, cfg.suffix_tokens)),
        "waits for the re-prefill",
    )
    put("restart: first completion", "prefix-reuse", s, "no snapshot: a full prefill")

    sc = data["scenarios"]
    data["ratios"] = {
        "hot_edit_vs_stateless": sc["hot-file edit"]["stateless"]["ttft_ms"] / sc["hot-file edit"]["banked"]["ttft_ms"],
        "hot_edit_vs_prefix_reuse": sc["hot-file edit"]["prefix-reuse"]["ttft_ms"]
        / sc["hot-file edit"]["banked"]["ttft_ms"],
        "cold_edit_vs_prefix_reuse": sc["cold-file edit (middle)"]["prefix-reuse"]["ttft_ms"]
        / sc["cold-file edit (middle)"]["banked"]["ttft_ms"],
        "restore_vs_cold_prefill": cold["seconds"] / restore_s,
    }
    data["targets"] = {
        "hot_edit_vs_stateless >= 20": data["ratios"]["hot_edit_vs_stateless"] >= 20,
        "restore_vs_cold_prefill >= 10": data["ratios"]["restore_vs_cold_prefill"] >= 10,
        f"keystroke re-prefill <= typed + {cfg.suffix_tokens} + 8": max(x["prefilled_tokens"] for x in ks)
        <= 1 + cfg.suffix_tokens + 8,
    }
    report(
        f"banked warm cache — {data['tokens']:,} workspace tokens, {e.info.model}, cpu",
        ["scenario", "strategy", "ms (ttft or wall)", "prefilled", "reused", "note"],
        rows,
        data,
        args.json,
    )
    for k, v in data["ratios"].items():
        print(f"{k:28s} {v:8.1f}x")
    for k, v in data["targets"].items():
        print(f"target {k:45s} {'met' if v else 'MISSED'}")


if __name__ == "__main__":
    main()
