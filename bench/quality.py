"""Completion quality on real code: whole-workspace context vs. the current file vs. no suffix.

    python bench/quality.py [--source DIR] [--targets 24] [--files 3] [--seed 0] [--json bench/results/quality.json]

Masks deterministic-random targets in a directory of source code (a single
line, a block after a block opener, a function body) and asks the model to
fill each in, through banked's own code paths (WorkspaceCache, FIM tail,
run_generation, completion decisions and post-processing), in three modes:

- workspace: the whole workspace in the prefix (the target's file left out of
  the prefix: its masked text is in the FIM tail), as the daemon serves it;
- file: the current file only (repo header + the FIM tail);
- prefix: the whole workspace, but no suffix after the cursor.

Reported per mode: exact match and edit similarity of the post-processed
completion (and of the raw one, so post-processing can be seen never to lower
exact match), how many raw completions repeated the code after the cursor and
how many still do after post-processing, and latency. Not a test: a table and
JSON. Default source: the installed pytest-lsp package (code nobody here wrote).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banked.daemon import config, model_store, postprocess, syntax
from banked.daemon.engines.base import Engine, TextStream
from banked.daemon.engines.llamacpp import LlamaCppEngine
from banked.daemon.templates import template_for
from banked.daemon.workspace import Workspace
from banked.daemon.wscache import Generation, WorkspaceCache, run_generation
from common import report


@dataclass
class Target:
    path: str  # relative to the workspace
    kind: str  # line | block | body
    start: int  # character offsets of the masked span in the file's text
    end: int

    def masked(self, text: str) -> str:
        return text[: self.start] + text[self.end :]

    def cursor(self, text: str) -> tuple[int, int]:
        before = text[: self.start]
        return before.count("\n"), self.start - (before.rfind("\n") + 1)


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for i, c in enumerate(text):
        if c == "\n":
            starts.append(i + 1)
    return starts


def find_targets(rel: str, text: str, rng: random.Random, per_kind: int) -> list[Target]:
    """Candidate spans by kind; `per_kind` of each, chosen with `rng`."""
    lines = text.split("\n")
    starts = _line_starts(text)
    lines_c: list[Target] = []
    blocks: list[Target] = []
    bodies: list[Target] = []
    for i, ln in enumerate(lines):
        s = ln.strip()
        if len(s) >= 12 and not s.startswith(("#", '"', "'", "@")) and not s.endswith((":", ",", "(", "[", "{", "\\")):
            ind = len(ln) - len(ln.lstrip())
            lines_c.append(Target(rel, "line", starts[i] + ind, starts[i] + len(ln)))
        if s.endswith(":") and not s.startswith(("def ", "class ", "async def ", "#", "@")) and i + 1 < len(lines):
            ind = len(ln) - len(ln.lstrip())
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > ind):
                j += 1
            while j - 1 > i and not lines[j - 1].strip():
                j -= 1
            if 1 <= j - i - 1 <= 4:
                first = lines[i + 1]
                begin = starts[i + 1] + len(first) - len(first.lstrip())
                blocks.append(Target(rel, "block", begin, starts[j - 1] + len(lines[j - 1])))
    parsed = syntax.parse_text("python", text) if rel.endswith(".py") else None
    if parsed is not None:
        for sym in syntax.symbols(parsed):
            if sym.kind == "function_definition" and 2 <= sym.end_line - sym.start_line <= 8:
                body_line = next((k for k in range(sym.start_line + 1, sym.end_line + 1) if lines[k].strip()), None)
                if body_line is None or lines[body_line].lstrip().startswith(('"""', "'''", '"', "'")):
                    continue  # docstrings make the body a recitation
                first = lines[body_line]
                begin = starts[body_line] + len(first) - len(first.lstrip())
                bodies.append(Target(rel, "body", begin, starts[sym.end_line] + len(lines[sym.end_line])))
    out: list[Target] = []
    for pool in (lines_c, blocks, bodies):
        rng.shuffle(pool)
        out.extend(pool[:per_kind])
    return out


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def norm(s: str) -> str:
    return "\n".join(ln.rstrip() for ln in s.strip("\n").split("\n")).strip()


def similarity(a: str, b: str) -> float:
    a, b = norm(a), norm(b)
    return 1.0 if not a and not b else 1 - levenshtein(a, b) / max(len(a), len(b))


def repeats_suffix(completion: str, after: str) -> bool:
    """The completion re-types code already after the cursor: the rest of its line, or the next line."""
    rest, _, below = after.partition("\n")
    if rest.strip() and completion.rstrip().endswith(rest.strip()):
        return True
    nxt = next((ln.strip() for ln in below.split("\n") if ln.strip()), "")
    gen = [ln.strip() for ln in completion.rstrip().split("\n")]
    return len(nxt) >= 3 and nxt in gen[1:]


class Mode:
    """One way of giving the model context: a WorkspaceCache on its own engine."""

    def __init__(self, name: str, engine: Engine, ws: Workspace, cfg: config.Config, suffix: bool):
        self.name, self.suffix, self.cfg = name, suffix, cfg
        self.wc = WorkspaceCache(ws, engine, template_for(engine), cfg)

    def complete(self, t: Target, masked: str, max_tokens: int) -> dict[str, Any]:
        line, col = t.cursor(masked)
        parsed = syntax.parse_text("python", masked) if t.path.endswith(".py") else None
        decision = postprocess.decide(parsed, masked, line, col, self.cfg.max_lines)
        lines = masked.split("\n")
        after = "\n".join([lines[line][col:], *lines[line + 1 :]]) if self.suffix else ""
        text = masked if self.suffix else masked[: t.start]
        self.wc.sync()
        tail = self.wc.fim_tail(t.path, text, line, col)
        g = Generation(
            tail, self.wc.tpl.fim_stops, max_tokens, TextStream(self.wc.engine, max_lines=decision.max_lines)
        )
        t0 = time.perf_counter()
        run_generation(self.wc, g)
        raw = g.stream.text
        cleaned = postprocess.clean(raw, lines[line][:col], after, decision)
        return {
            "raw": raw,
            "text": cleaned,
            "after": "\n".join([lines[line][col:], *lines[line + 1 :]]),
            "seconds": time.perf_counter() - t0,
            **g.metrics(),
        }


def replay(path: Path, source: Path) -> None:
    """Post-process the raw completions of an earlier run again: for changes to the rules, without the model."""
    data = json.loads(path.read_text())
    totals: dict[str, dict[str, float]] = {}
    for r in data["results"]:
        text = (source / r["path"]).read_text()
        start = r.get("start")
        if start is None:  # older runs: the target starts after the indentation of its line
            line_start = sum(len(x) + 1 for x in text.split("\n")[: r["line"] - 1])
            start = text.index(r["expected"], line_start)
        t = Target(r["path"], r["kind"], start, start + len(r["expected"]))
        masked = t.masked(text)
        line, col = t.cursor(masked)
        lines = masked.split("\n")
        parsed = syntax.parse_text("python", masked) if t.path.endswith(".py") else None
        decision = postprocess.decide(parsed, masked, line, col, 10)
        after = "\n".join([lines[line][col:], *lines[line + 1 :]])
        for mode in ("workspace", "file", "prefix"):
            raw = r[mode]["raw"]
            cleaned = postprocess.clean(raw, lines[line][:col], after if mode != "prefix" else "", decision)
            acc = totals.setdefault(mode, {"exact": 0, "exact_raw": 0, "repeats_raw": 0, "repeats": 0, "lowered": 0})
            exact, exact_raw = norm(cleaned) == norm(r["expected"]), norm(raw) == norm(r["expected"])
            acc["exact"] += exact
            acc["exact_raw"] += exact_raw
            acc["lowered"] += exact_raw and not exact
            acc["repeats_raw"] += repeats_suffix(raw, after)
            acc["repeats"] += repeats_suffix(cleaned, after)
    n = len(data["results"])
    print(f"replay of {path} ({n} targets) with today's post-processing:")
    for mode, a in totals.items():
        print(
            f"  {mode:9} exact {100 * a['exact'] / n:.1f}% (raw {100 * a['exact_raw'] / n:.1f}%), "
            f"targets made worse {a['lowered']:.0f}, suffix repeats {a['repeats_raw']:.0f} -> {a['repeats']:.0f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    spec = importlib.util.find_spec("pytest_lsp")
    default_src = str(Path(spec.origin).parent) if spec and spec.origin else None
    p.add_argument("--source", default=default_src, help="a directory of source code (default: pytest-lsp's)")
    p.add_argument("--targets", type=int, default=24, help="masked targets in all (a third of each kind)")
    p.add_argument("--files", type=int, default=3, help="how many files the targets come from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix-lines", type=int, default=80, help="lines of the file before the cursor in the tail")
    p.add_argument("--model", help="a GGUF file (default: the embedded model)")
    p.add_argument("--json", default="bench/results/quality.json")
    p.add_argument("--replay", help="re-apply today's post-processing to a previous run's raw completions (no model)")
    args = p.parse_args()
    if args.replay:
        replay(Path(args.replay), Path(args.source))
        return

    work = Path(tempfile.mkdtemp(prefix="banked-quality-"))
    root = work / Path(args.source).name
    shutil.copytree(args.source, root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.json"))
    cfg = config.Config(prefix_lines=args.prefix_lines, max_lines=10)
    model = Path(args.model) if args.model else model_store.ensure_default_model()
    full = Workspace(root)
    full.scan()
    rng = random.Random(args.seed)
    candidates = sorted(p for p in full.files if p.endswith(".py") and full.files[p].text.count("\n") > 40)
    files = rng.sample(candidates, min(args.files, len(candidates)))
    per_kind = max(1, args.targets // (3 * len(files)))
    targets = [t for f in sorted(files) for t in find_targets(f, full.files[f].text, rng, per_kind)]
    print(f"{len(full.files)} files in {root.name}; {len(targets)} targets from {', '.join(sorted(files))}")

    eng_ws = LlamaCppEngine(model, n_ctx=32768, n_threads=cfg.n_threads, chunk=256)
    eng_file = LlamaCppEngine(model, n_ctx=8192, n_threads=cfg.n_threads, chunk=256)
    empty = Workspace(work / "empty")
    (work / "empty").mkdir()
    empty.scan()
    modes = [
        Mode("workspace", eng_ws, full, cfg, True),
        Mode("file", eng_file, empty, cfg, True),
        Mode("prefix", eng_ws, full, cfg, False),
    ]
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    for f in sorted(files):
        original = full.files.pop(f)  # the target file is not in the prefix: its masked text is in the tail
        modes[0].wc.invalidate()
        modes[2].wc.invalidate()
        print(f"prefill without {f}: ", end="", flush=True)
        t1 = time.perf_counter()
        modes[0].wc.sync()
        print(f"{len(modes[0].wc.plan().ids)} tokens, {time.perf_counter() - t1:.0f}s", flush=True)
        for t in [t for t in targets if t.path == f]:
            text = original.text
            expected = text[t.start : t.end]
            masked = t.masked(text)
            row: dict[str, Any] = {"path": t.path, "kind": t.kind, "line": t.cursor(text)[0] + 1, "expected": expected}
            row["start"], row["end"] = t.start, t.end
            for m in modes:
                r = m.complete(t, masked, 48 if t.kind == "line" else 160)
                row[m.name] = {
                    "text": r["text"],
                    "raw": r["raw"],
                    "exact": norm(r["text"]) == norm(expected),
                    "exact_raw": norm(r["raw"]) == norm(expected),
                    "similarity": similarity(r["text"], expected),
                    "repeats_suffix_raw": repeats_suffix(r["raw"], r["after"]),
                    "repeats_suffix": repeats_suffix(r["text"], r["after"]),
                    "ttft_ms": r["ttft_ms"],
                    "seconds": r["seconds"],
                }
            results.append(row)
            print(
                f"  {t.kind:5} {t.path}:{row['line']}: "
                + " ".join(
                    f"{m.name}={'✔' if row[m.name]['exact'] else '·'}{row[m.name]['similarity']:.2f}" for m in modes
                ),
                flush=True,
            )
        full.files[f] = original
    rows = []
    summary: dict[str, Any] = {}
    for m in modes:
        rs = [r[m.name] for r in results]
        s = {
            "exact_match": 100 * sum(r["exact"] for r in rs) / len(rs),
            "exact_match_raw": 100 * sum(r["exact_raw"] for r in rs) / len(rs),
            "edit_similarity": 100 * statistics.mean(r["similarity"] for r in rs),
            "suffix_repeats_raw": sum(r["repeats_suffix_raw"] for r in rs),
            "suffix_repeats": sum(r["repeats_suffix"] for r in rs),
            "ttft_ms_p50": statistics.median(r["ttft_ms"] for r in rs),
            "seconds_mean": statistics.mean(r["seconds"] for r in rs),
        }
        summary[m.name] = s
        rows.append(
            [
                m.name,
                s["exact_match"],
                s["exact_match_raw"],
                s["edit_similarity"],
                f"{s['suffix_repeats_raw']} → {s['suffix_repeats']}",
                s["ttft_ms_p50"],
                s["seconds_mean"],
            ]
        )
    by_kind = {
        k: {m.name: 100 * statistics.mean(r[m.name]["exact"] for r in results if r["kind"] == k) for m in modes}
        for k in sorted({r["kind"] for r in results})
    }
    data = {
        "source": args.source,
        "files": sorted(files),
        "targets": len(results),
        "prefix_lines": args.prefix_lines,
        "model": str(model),
        "summary": summary,
        "exact_match_by_kind": by_kind,
        "workspace_minus_file_points": summary["workspace"]["exact_match"] - summary["file"]["exact_match"],
        "seconds": time.perf_counter() - t0,
        "results": results,
    }
    report(
        f"completion quality: {len(results)} targets in {root.name} ({', '.join(sorted(files))})",
        ["context", "exact %", "exact % raw", "edit sim %", "suffix repeats raw → after", "TTFT p50 ms", "s/req"],
        rows,
        data,
        Path(args.json),
    )
    print("exact match by kind:", {k: {m: round(v, 1) for m, v in d.items()} for k, d in by_kind.items()})


if __name__ == "__main__":
    main()
