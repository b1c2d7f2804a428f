"""Completion quality on real code: whole-workspace context vs. the current file vs. no suffix.

    python bench/quality.py [--source DIR] [--targets 24] [--files 3] [--seed 0] [--json bench/results/quality.json]

Masks deterministic-random targets in a directory of source code (a single
line, a block after a block opener, a function body) and asks the model to
fill each in, through banked's own code paths (WorkspaceCache, FIM tail,
run_generation, completion decisions and post-processing), in three modes:

- workspace: every file of the workspace in the prefix, as the daemon serves it;
- file: the current file only;
- prefix: the whole workspace, but nothing after the cursor (no FIM suffix, and
  the current file cut at the cursor).

In no mode is the target's file in the prefix: its masked text is in the FIM
tail (`--prefix-lines` lines before the cursor, the usual suffix after it), so
`workspace` and `file` differ only by the other files. Every other file is in
the workspace prefix, the other files with targets included (they are taken out
only while their own targets run, and put back as the newest files after).
Reported per mode: exact match and edit similarity of the
post-processed completion (and of the raw one, so post-processing can be seen
never to lower exact match), how many raw completions repeated the code after
the cursor and how many still do after post-processing, and latency. Not a
test: a table and JSON. Default source: the installed pytest-lsp package (code
nobody here wrote).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import random
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banked.daemon import config
from banked.daemon.context import postprocess, syntax
from banked.daemon.context.cursor import Cursor
from banked.daemon.context.templates import template_for
from banked.daemon.context.workspace import FileState, Workspace, digest
from banked.daemon.context.wscache import WorkspaceCache
from banked.daemon.engines import model_store
from banked.daemon.engines.base import Engine
from banked.daemon.engines.generation import Generation, TextStream, run_generation
from banked.daemon.engines.llamacpp import LlamaCppEngine
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

    def surroundings(self, masked: str, max_lines: int) -> tuple[postprocess.Decision, Cursor]:
        """What post-processing needs: the completion decision and the cursor in the masked text."""
        line, col = self.cursor(masked)
        parsed = syntax.parse_text("python", masked) if self.path.endswith(".py") else None
        cursor = Cursor.at(masked, line, col)
        return postprocess.decide(parsed, cursor, max_lines), cursor


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for i, c in enumerate(text):
        if c == "\n":
            starts.append(i + 1)
    return starts


def find_targets(
    rel: str, text: str, rng: random.Random, per_kind: int, keep: Callable[[Target], bool] | None = None
) -> list[Target]:
    """Candidate spans by kind (those `keep` accepts); `per_kind` of each, chosen with `rng`."""
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
    for pool in ([t for t in p if keep is None or keep(t)] for p in (lines_c, blocks, bodies)):
        rng.shuffle(pool)
        out.extend(pool[:per_kind])
    return out


IDENT = re.compile(r"[A-Za-z_]\w*")


def defined_names(text: str) -> set[str]:
    """Names a Python module defines: its functions, classes, methods and module-level assignments."""
    names = {sym.name.split(".")[-1] for sym in syntax.symbols(syntax.parse_text("python", text))}
    return names | set(re.findall(r"^([A-Za-z_]\w*)\s*[:=]", text, re.M))


def needs_other_files(t: Target, text: str, own: set[str], others: set[str], prefix_lines: int) -> bool:
    """The target uses a name only another file defines, and the FIM tail does not show it.

    The cross-file subset (as CrossCodeEval selects its targets): what the workspace context is for.
    """
    line = text[: t.start].count("\n")
    visible = "\n".join(text.split("\n")[max(0, line - prefix_lines) : line]) + text[t.end : t.end + 250]
    return any(
        n in others and n not in own and not re.search(rf"\b{n}\b", visible)
        for n in set(IDENT.findall(text[t.start : t.end]))
    )


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
    """The completion re-types code already after the cursor: the rest of its line, or the next lines.

    A generated line equal to the next line counts when it is what the model ends on, when the
    model goes on with the line after it too, or when it is long enough (postprocess.DISTINCT_LINE)
    not to be a coincidence; a `try:` or `else:` of the model's own followed by other code does not.
    """
    rest, _, below = after.partition("\n")
    if rest.strip() and completion.rstrip().endswith(rest.strip()):
        return True
    nxt = [ln.strip() for ln in below.split("\n") if ln.strip()][:2]
    gen = completion.rstrip().split("\n")
    for i in range(1, len(gen)):
        if not nxt or len(nxt[0]) < 3 or gen[i].strip() != nxt[0]:
            continue
        following = next((g.strip() for g in gen[i + 1 :] if g.strip()), None)
        if following is None or len(nxt[0]) >= postprocess.DISTINCT_LINE or nxt[1:] == [following]:
            return True
    return False


EDITED_MTIME_NS = 1 << 62  # files with targets are newer than anything on disk: last in the prefix


class Mode:
    """One way of giving the model context: a WorkspaceCache over its own workspace and engine."""

    def __init__(self, name: str, engine: Engine, ws: Workspace, cfg: config.Config, suffix: bool):
        self.name, self.suffix, self.cfg, self.ws = name, suffix, cfg, ws
        self.wc = WorkspaceCache(ws, engine, template_for(engine), cfg)
        self.newest = EDITED_MTIME_NS

    def edit(self, path: str, text: str | None) -> None:
        """Take a file out of this mode's workspace (None), or put it back as the newest file on disk."""
        self.ws.files.pop(path, None)
        if text is not None:
            self.newest += 1
            self.ws.files[path] = FileState(path, text, self.newest, digest(text))
        self.wc.invalidate()

    def complete(self, t: Target, masked: str, max_tokens: int) -> dict[str, Any]:
        decision, cursor = t.surroundings(masked, self.cfg.max_lines)
        text = masked if self.suffix else masked[: t.start]
        self.wc.sync()
        tail = self.wc.fim_tail(t.path, Cursor.at(text, cursor.line, cursor.col))
        g = Generation(
            tail, self.wc.tpl.fim_stops, max_tokens, TextStream(self.wc.engine, max_lines=decision.max_lines)
        )
        t0 = time.perf_counter()
        run_generation(self.wc, g)
        raw = g.stream.text
        cleaned = postprocess.clean(raw, cursor, decision, suffix=self.suffix)
        return {
            "raw": raw,
            "text": cleaned,
            "after": cursor.after,
            "seconds": time.perf_counter() - t0,
            **g.metrics(),
        }


def replay(path: Path, source: Path) -> None:
    """Post-process the raw completions of an earlier run again: for changes to the rules, without the model."""
    data = json.loads(path.read_text())
    totals: dict[str, dict[str, float]] = {}
    names = {str(f.relative_to(source)): defined_names(f.read_text()) for f in source.rglob("*.py")}
    cross = 0
    for r in data["results"]:
        text = (source / r["path"]).read_text()
        start = r.get("start")
        if start is None:  # older runs: the target starts after the indentation of its line
            line_start = sum(len(x) + 1 for x in text.split("\n")[: r["line"] - 1])
            start = text.index(r["expected"], line_start)
        t = Target(r["path"], r["kind"], start, start + len(r["expected"]))
        others = set().union(*(v for k, v in names.items() if k != t.path))
        cross += needs_other_files(t, text, names.get(t.path, set()), others, data["prefix_lines"])
        decision, cursor = t.surroundings(t.masked(text), 10)
        after = cursor.after
        for mode in [m for m in ("workspace", "file", "prefix") if m in r]:
            raw = r[mode]["raw"]
            cleaned = postprocess.clean(raw, cursor, decision, suffix=mode != "prefix")
            acc = totals.setdefault(mode, {"exact": 0, "exact_raw": 0, "repeats_raw": 0, "repeats": 0, "lowered": 0})
            exact, exact_raw = norm(cleaned) == norm(r["expected"]), norm(raw) == norm(r["expected"])
            acc["exact"] += exact
            acc["exact_raw"] += exact_raw
            acc["lowered"] += exact_raw and not exact
            acc["repeats_raw"] += repeats_suffix(raw, after)
            acc["repeats"] += repeats_suffix(cleaned, after)
    n = len(data["results"])
    print(f"replay of {path} ({n} targets) with today's post-processing:")
    print(f"  {cross} of them use a name only another file defines and the FIM tail does not show")
    for mode, a in totals.items():
        print(
            f"  {mode:9} exact {100 * a['exact'] / n:.1f}% (raw {100 * a['exact_raw'] / n:.1f}%), "
            f"targets made worse {a['lowered']:.0f}, suffix repeats {a['repeats_raw']:.0f} -> {a['repeats']:.0f}"
        )


def main() -> None:  # noqa: C901 (rewritten with issue 12's harness)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    spec = importlib.util.find_spec("pytest_lsp")
    default_src = str(Path(spec.origin).parent) if spec and spec.origin else None
    p.add_argument("--source", default=default_src, help="a directory of source code (default: pytest-lsp's)")
    p.add_argument("--targets", type=int, default=24, help="masked targets in all (a third of each kind)")
    p.add_argument("--files", type=int, default=3, help="how many files the targets come from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix-lines", type=int, default=80, help="lines of the file before the cursor in the tail")
    p.add_argument(
        "--cross-file",
        action="store_true",
        help="only targets that use a name another file defines and the FIM tail does not show",
    )
    p.add_argument("--modes", default="workspace,file,prefix", help="which contexts to compare (comma-separated)")
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
    keep: dict[str, Callable[[Target], bool]] = {}
    if args.cross_file:
        names = {p: defined_names(full.files[p].text) for p in full.files if p.endswith(".py")}
        for f in candidates:
            others = set().union(*(v for k, v in names.items() if k != f))
            text = full.files[f].text
            keep[f] = functools.partial(
                needs_other_files, text=text, own=names[f], others=others, prefix_lines=args.prefix_lines
            )
        candidates = [f for f in candidates if find_targets(f, full.files[f].text, random.Random(0), 1, keep[f])]
    files = rng.sample(candidates, min(args.files, len(candidates)))
    per_kind = max(1, args.targets // (3 * len(files)))
    targets = [t for f in sorted(files) for t in find_targets(f, full.files[f].text, rng, per_kind, keep.get(f))]
    print(f"{len(full.files)} files in {root.name}; {len(targets)} targets from {', '.join(sorted(files))}")

    def workspace() -> Workspace:
        ws = Workspace(root)
        ws.scan()
        return ws

    only = Workspace(work / "empty")
    (work / "empty").mkdir()
    only.scan()

    def engine(n_ctx: int) -> Engine:
        return LlamaCppEngine(model, n_ctx, cfg.n_threads, 256)

    makers = {
        "workspace": lambda: Mode("workspace", engine(32768), workspace(), cfg, True),
        "file": lambda: Mode("file", engine(16384), only, cfg, True),
        "prefix": lambda: Mode("prefix", engine(32768), workspace(), cfg, False),
    }
    modes = [makers[name]() for name in args.modes.split(",")]
    # Smallest file first: putting a file back re-prefills it and every file put back before it.
    order = sorted(files, key=lambda f: (len(full.files[f].text), f))
    prefixed = [m for m in modes if m.name != "file"]  # the modes with the workspace in their prefix
    for m in prefixed:  # the files with targets are the newest, the first to be worked on last in the prefix
        for f in reversed(order):
            m.edit(f, full.files[f].text)
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    for f in order:
        for m in prefixed:  # the file being edited is in the FIM tail, not the prefix
            m.edit(f, None)
        for m in modes:
            print(f"{m.name}: prefill {len(m.wc.plan().ids)} tokens: ", end="", flush=True)
            t1 = time.perf_counter()
            m.wc.sync()
            print(f"{time.perf_counter() - t1:.0f}s", flush=True)
        for t in [t for t in targets if t.path == f]:
            text = full.files[f].text
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
                    "prefilled_tokens": r["prefilled_tokens"],
                    "seconds": r["seconds"],
                }
            results.append(row)
            print(
                f"  {t.kind:5} {t.path}:{row['line']}: "
                + " ".join(
                    f"{m.name}={'✔' if row[m.name]['exact'] else '·'}{row[m.name]['similarity']:.2f}" for m in modes
                )
                + f" ({sum(row[m.name]['seconds'] for m in modes):.0f}s)",
                flush=True,
            )
        for m in prefixed:  # done with this file: back in the prefix, as the newest
            m.edit(f, full.files[f].text)
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
        "cross_file": args.cross_file,
        "files": sorted(files),
        "targets": len(results),
        "prefix_lines": args.prefix_lines,
        "model": str(model),
        "summary": summary,
        "exact_match_by_kind": by_kind,
        "workspace_minus_file_points": (
            summary["workspace"]["exact_match"] - summary["file"]["exact_match"]
            if {"workspace", "file"} <= summary.keys()
            else None
        ),
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
