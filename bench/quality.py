"""Completion quality on code nobody here wrote: whole workspace vs. the current file vs. retrieved snippets.

    python bench/quality.py --source DIR [--source DIR2 ...] [--cross-file] --targets 60 \
        --modes workspace,file,snippets --json PATH

Several `--source`s make one run over several packages (a package rarely has 60 cross-file targets in the
files the daemon keeps hot): `--targets` is shared out evenly, each package gets its own workspace, and the
table over all targets comes with one per package (`packages.<name>.summary` in the JSON).

Masks targets in a package and asks the embedded model (or `--model`) to fill each in, through banked's own
code paths (WorkspaceCache plan, focus segment, FIM tail, run_generation, decide, clean). The buffer is the
file with the target removed, cursor at the target, as when a user writes new code; in every mode the saved
copy of that file (without its targets' lines) is in the prefix, as the daemon holds it, and every mode has
the same FIM tail. Modes:

- file: the current file only;
- snippets: the current file plus up to 1,024 tokens of retrieved snippets, chosen as Copilot and Continue
  do: the definitions the file imports, then the 60-line windows of other files most Jaccard-similar to the
  lines before the cursor;
- workspace: banked as it serves: every file of the package (ordered as banked orders them), the focus
  segment, then the tail;
- workspace-noactive / workspace-nofocus: banked without the saved copy of the current file / without the
  focus segment (to decide what pays);
- workspace-deps: banked with `prefix_order = "deps"` (the current file at the prefix's hot end, its imports
  right before it): each switch to another target file re-prefills the reordered end (`resync_tokens_mean`).

`MODE@KEY=VALUE` (repeatable) runs a mode with another daemon setting, side by side with the rest in one run:
`workspace@prefix_lines=3`, `workspace@focus_tokens=0`.

Targets: `--cross-file` takes single lines that use a name another file of the package defines, the current
file does not define, and the current file uses nowhere outside its import lines (CrossCodeEval's rule);
otherwise deterministic-random lines, blocks and function bodies (the no-regression set). Reported per mode:
exact match, identifier hits (the completion uses the target's cross-file names), edit similarity, raw exact
match (post-processing must never lower it), suffix repetitions, latency. Targets are grouped per file, so
each prefix is prefilled once. A table and JSON (`targets`, `summary.<mode>.exact_match`, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import random
import re
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from banked.daemon import config
from banked.daemon.context import postprocess, syntax
from banked.daemon.context.cursor import Cursor
from banked.daemon.context.templates import template_for
from banked.daemon.context.workspace import FileState, Workspace, digest
from banked.daemon.context.wscache import TAIL_RESERVE, WorkspaceCache
from banked.daemon.engines import model_store
from banked.daemon.engines.base import Engine
from banked.daemon.engines.generation import Generation, TextStream, first_lines, run_generation
from banked.daemon.engines.llamacpp import LlamaCppEngine
from common import print_rows, report

IDENT = re.compile(r"[A-Za-z_]\w*")
SNIPPET_TOKENS = 1024
HOT_SHARE = 0.5  # the files worked on fit in this share of the budget (the daemon keeps half of it for them)
CHARS_PER_TOKEN = 3.2  # Python source in Qwen's tokenizer, about (a lower bound keeps the estimate safe)


# -- targets -----------------------------------------------------------------------------------------


@dataclass
class Target:
    path: str  # relative to the package
    kind: str  # line | block | body
    start: int  # character offsets of the masked span in the file's text (after the line's indentation)
    end: int
    names: tuple[str, ...] = ()  # the cross-file names the span uses

    def buffer(self, text: str) -> str:
        """The live buffer: the span removed, the cursor where it was (its line's indentation kept)."""
        return text[: self.start] + text[self.end :]

    def lines(self, text: str) -> tuple[int, int]:
        """Character range of the target's whole lines, newline included."""
        line_end = text.find("\n", self.end)
        return text.rfind("\n", 0, self.start) + 1, line_end + 1 if line_end >= 0 else len(text)

    def cursor(self, text: str) -> Cursor:
        buf = self.buffer(text)
        before = buf[: self.start]
        return Cursor.at(buf, before.count("\n"), self.start - (before.rfind("\n") + 1))


def saved(text: str, targets: Iterable[Target]) -> str:
    """The file on disk while the user writes new code at each of its targets: without the targets' lines.

    All of a file's targets are out of its saved copy at once (not one at a time), so a run prefills each
    prefix once: one target line missing would re-prefill from it to the end of the plan for every target,
    minutes a target at a 12k depth on these cores. The saved copy then lacks a few more lines than the
    user's would: if anything, that is against the workspace modes."""
    cut = sorted(t.lines(text) for t in targets)
    out, at = [], 0
    for a, b in cut:
        out.append(text[at : max(a, at)])
        at = max(at, b)
    return "".join(out) + text[at:]


def _line_starts(text: str) -> list[int]:
    return [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]


def _is_code_line(s: str) -> bool:
    return (
        len(s) >= 12
        and not s.startswith(("#", '"', "'", "@", "import ", "from "))
        and not s.endswith((":", ",", "(", "[", "{", "\\"))
    )


def line_targets(rel: str, text: str) -> list[Target]:
    """Lines of code (not prose inside a docstring or a comment) worth completing."""
    starts = _line_starts(text)
    parsed = syntax.parse_text("python", text)
    out = []
    for i, ln in enumerate(text.split("\n")):
        ind = len(ln) - len(ln.lstrip())
        if _is_code_line(ln.strip()) and not _in_string(parsed, len(text[: starts[i] + ind].encode())):
            out.append(Target(rel, "line", starts[i] + ind, starts[i] + len(ln)))
    return out


def _in_string(parsed: syntax.Parsed, offset: int) -> bool:
    return any(
        n.type in ("string", "string_content", "comment") for n in syntax.ancestors_of_range(parsed, offset, offset + 1)
    )


def block_and_body_targets(rel: str, text: str) -> list[Target]:
    """Blocks of 1-4 lines after a block opener, and function bodies of 2-8 lines (no docstrings)."""
    lines, starts, out = text.split("\n"), _line_starts(text), []
    for i, ln in enumerate(lines):
        s = ln.strip()
        if not s.endswith(":") or s.startswith(("def ", "class ", "async def ", "#", "@")) or i + 1 >= len(lines):
            continue
        ind = len(ln) - len(ln.lstrip())
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > ind):
            j += 1
        while j - 1 > i and not lines[j - 1].strip():
            j -= 1
        if 1 <= j - i - 1 <= 4:
            first = lines[i + 1]
            out.append(
                Target(
                    rel, "block", starts[i + 1] + len(first) - len(first.lstrip()), starts[j - 1] + len(lines[j - 1])
                )
            )
    for sym in syntax.symbols(syntax.parse_text("python", text)):
        if sym.kind == "function_definition" and 2 <= sym.end_line - sym.start_line <= 8:
            k = next((k for k in range(sym.start_line + 1, sym.end_line + 1) if lines[k].strip()), None)
            if k is not None and not lines[k].lstrip().startswith(('"""', "'''", '"', "'")):
                begin = starts[k] + len(lines[k]) - len(lines[k].lstrip())
                out.append(Target(rel, "body", begin, starts[sym.end_line] + len(lines[sym.end_line])))
    return out


def defined_names(text: str) -> set[str]:
    """What a Python module defines: functions, classes, methods and module-level assignments."""
    names = {s.name for s in syntax.symbols(syntax.parse_text("python", text))}
    return names | set(re.findall(r"^([A-Za-z_]\w*)\s*[:=]", text, re.M))


def uses_outside_imports(text: str) -> Counter[str]:
    """How often the file uses each identifier in lines that are not import statements."""
    lines = [ln for ln in _statements(text) if not ln.lstrip().startswith(("import ", "from "))]
    return Counter(IDENT.findall("\n".join(lines)))


def import_lines(text: str) -> set[int]:
    """The line numbers (0-based) that belong to import statements, a parenthesised one's every line."""
    out: set[int] = set()
    first, depth = -1, 0
    for i, ln in enumerate(text.split("\n")):
        if first < 0 and not ln.lstrip().startswith(("import ", "from ")):
            continue
        first = i if first < 0 else first
        depth += ln.count("(") - ln.count(")")
        if depth <= 0:
            out.update(range(first, i + 1))
            first, depth = -1, 0
    return out


STRING = re.compile(r"(\"\"\"|'\'\'|\"|')(?:\\.|(?!\1).)*?\1", re.S)


def _statements(text: str) -> list[str]:
    """Lines with multi-line imports folded into one (a parenthesised `from x import (a, b)` is one import)."""
    out, buf, depth = [], "", 0
    for ln in text.split("\n"):
        buf = f"{buf} {ln}" if buf else ln
        depth += ln.count("(") - ln.count(")")
        if depth <= 0:
            out.append(buf)
            buf, depth = "", 0
    return out + ([buf] if buf else [])


def cross_file_names(t: Target, text: str, own: set[str], used: Counter[str], others: set[str]) -> tuple[str, ...]:
    """CrossCodeEval's rule: names the span uses that another file defines, this file does not, and this file
    uses nowhere outside its import lines (the span itself not counted). A name inside a string (`__all__`)
    is not a use."""
    span = Counter(IDENT.findall(STRING.sub("", text[t.start : t.end])))
    return tuple(sorted(n for n in span if n in others and n not in own and used[n] <= span[n]))


def choose_targets(
    files: dict[str, str],
    n: int,
    cross: bool,
    seed: int,
    per_file: int,
    max_chars: int = 1 << 62,
    dense: bool = True,
    per_file_cap: bool = False,
) -> list[Target]:
    """`n` targets, deterministic-random, grouped by file: files are drawn at random and up to `per_file`
    targets taken from each (each file's prefix is then prefilled once, not once per target). The files
    drawn hold at most `max_chars` in all: they are the files worked on, which the daemon keeps in the
    prefix within half its budget (a file that would not fit is passed over). `dense` takes the files
    with the most targets per character first, which keeps a run short but favours small files (whose
    targets sit near their top); otherwise files come in plain random order. `per_file_cap`: `max_chars`
    bounds each file, not all of them together (the package fits the budget whole)."""
    rng = random.Random(seed)
    names = {p: defined_names(t) for p, t in files.items()}
    by_file: dict[str, list[Target]] = {}
    for rel in sorted(files):
        text = files[rel]
        if cross:
            others = set().union(*(v for k, v in names.items() if k != rel))
            used = uses_outside_imports(text)
            imports = import_lines(text)  # an import is not a use (CrossCodeEval targets the first use)
            pool = [t for t in line_targets(rel, text) if text.count("\n", 0, t.start) not in imports]
            for t in pool:
                t.names = cross_file_names(t, text, names[rel], used, others)
            pool = [t for t in pool if t.names]
        else:
            pool = line_targets(rel, text) + block_and_body_targets(rel, text)
        if pool:
            by_file[rel] = pool
    order = sorted(by_file)
    rng.shuffle(order)
    if dense and max_chars < 1 << 62:  # room is short: the files with the most targets per character first
        order.sort(key=lambda rel: -min(len(by_file[rel]), per_file) / max(len(files[rel]), 1))
    chosen: list[Target] = []
    held = 0
    for rel in order:
        if (len(files[rel]) if per_file_cap else held + len(files[rel])) > max_chars:
            continue
        held += len(files[rel])
        pool = by_file[rel]
        rng.shuffle(pool)
        chosen += sorted(pool[: min(per_file, n - len(chosen))], key=lambda t: -t.start)
        if len(chosen) >= n:
            break
    return chosen


# -- snippets (the retrieval peer) --------------------------------------------------------------------


def snippets(rel: str, buffer: str, cursor_line: int, files: dict[str, str], tpl: Any) -> list[tuple[str, str]]:
    """Up to SNIPPET_TOKENS of context as Copilot/Continue retrieve it: imported definitions, then the 60-line
    windows of other files most Jaccard-similar to the 60 lines before the cursor."""
    from banked.daemon.context import focus, repomap

    infos = {p: repomap.RepoMap().info(p, t, digest(t)) for p, t in files.items()}
    parsed = syntax.parse_text("python", buffer)
    imported = [w for w in focus.wanted(rel, parsed, Cursor.at(buffer, 0, 0), infos) if w.score >= 3.0]
    out: list[tuple[str, str]] = []
    used = 0
    for w in imported:
        text = focus.excerpt(files[w.path], w.symbol, infos[w.path].symbols)
        cost = len(tpl.tokens(text)) + 8
        if used + cost > SNIPPET_TOKENS // 2:
            break
        out.append((w.path, text))
        used += cost
    here = set(IDENT.findall("\n".join(buffer.split("\n")[max(0, cursor_line - 60) : cursor_line])))
    windows = []
    for p, text in files.items():
        if p == rel:
            continue
        lines = text.split("\n")
        for i in range(0, max(1, len(lines) - 59), 30):
            w = "\n".join(lines[i : i + 60])
            ids = set(IDENT.findall(w))
            windows.append((len(here & ids) / max(1, len(here | ids)), p, i, w))
    for _score, p, _i, w in sorted(windows, key=lambda x: (-x[0], x[1], x[2])):
        cost = len(tpl.tokens(w)) + 8
        if used + cost > SNIPPET_TOKENS:
            continue
        out.append((p, w))
        used += cost
    return out


# -- modes ---------------------------------------------------------------------------------------------


@dataclass
class Mode:
    """One way of giving the model context: a workspace, cache and engine (shared by the modes whose prefix is
    the same, which differ only in their tails: `workspace@prefix_lines=3` beside `workspace`), and its own
    tail settings."""

    name: str
    wc: WorkspaceCache
    with_files: bool  # the other files of the package
    with_focus: bool = False
    with_snippets: bool = False
    clock: int = field(default=1 << 62)
    cfg: config.Config | None = None  # this mode's settings (the shared cache's tails are laid out with them)

    def put(self, path: str, text: str | None) -> None:
        """Write a file into this mode's workspace as the newest one (None: take it out)."""
        self.wc.ws.files.pop(path, None)
        if text is not None:
            self.clock += 1
            self.wc.ws.files[path] = FileState(path, text, self.clock, digest(text))
        self.wc.invalidate()

    def complete(self, t: Target, text: str, files: dict[str, str], max_tokens: int) -> dict[str, Any]:
        if self.cfg is not None and self.wc.cfg is not self.cfg:
            # tails only: the modes sharing this cache agree on everything the plan uses (the bench's CPU engine)
            self.wc.cfg = self.cfg = config.for_engine(self.cfg, on_cpu=True)
            self.wc._focus_key = None
        buf, cursor = t.buffer(text), t.cursor(text)
        parsed = syntax.parse_text("python", buf)
        decision = postprocess.decide(parsed, cursor, self.wc.cfg.max_lines, self.wc.cfg.multiline)
        tail: list[int] = []
        if self.with_snippets:
            for path, snippet in snippets(t.path, buf, cursor.line, files, self.wc.tpl):
                tail += self.wc.tpl.file(path, snippet)
        if self.with_focus:
            tail += self.wc.focus(t.path, cursor, parsed)
        t0 = time.perf_counter()
        self.wc.forget_windows()  # every target is a jump: its window is the shortest the daemon uses
        g = Generation(
            tail + self.wc.fim_tail(t.path, cursor, max_tokens, before_it=len(tail)),
            self.wc.tpl.fim_stops,
            max_tokens,
            TextStream(self.wc.engine, max_lines=decision.max_lines),
        )
        if self.with_files:
            self.wc.touch(t.path)  # as the daemon does for every completion
        synced = self.wc.sync()
        run_generation(self.wc, g)
        raw = g.stream.text
        return {
            "raw": raw,
            "text": postprocess.clean(raw, cursor, decision),
            "seconds": time.perf_counter() - t0,
            "synced_tokens": synced,
            **g.metrics(),
        }


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


def repeats_suffix(completion: str, cursor: Cursor) -> bool:
    """The completion re-types code already after the cursor: the rest of its line, or the next lines."""
    rest = cursor.rest.strip()
    if rest and completion.rstrip().endswith(rest):
        return True
    nxt = [ln.strip() for ln in cursor.below(40) if ln.strip()][:2]
    gen = completion.rstrip().split("\n")
    for i in range(1, len(gen)):
        if not nxt or len(nxt[0]) < 3 or gen[i].strip() != nxt[0]:
            continue
        following = next((g.strip() for g in gen[i + 1 :] if g.strip()), None)
        if following is None or len(nxt[0]) >= postprocess.DISTINCT_LINE or nxt[1:] == [following]:
            return True
    return False


def uses(completion: str, names: Iterable[str]) -> bool:
    got = set(IDENT.findall(completion))
    return all(n in got for n in names)


def score(r: dict[str, Any], t: Target, expected: str, cursor: Cursor) -> dict[str, Any]:
    return {
        "text": r["text"],
        "raw": r["raw"],
        "exact": norm(r["text"]) == norm(expected),
        "exact_raw": norm(r["raw"]) == norm(expected),
        "identifier_hit": uses(r["text"], t.names) if t.names else None,
        "similarity": similarity(r["text"], expected),
        "repeats_suffix_raw": repeats_suffix(r["raw"], cursor),
        "repeats_suffix": repeats_suffix(r["text"], cursor),
        "ttft_ms": r["ttft_ms"],
        "prefilled_tokens": r["prefilled_tokens"],
        "synced_tokens": r["synced_tokens"],
        "seconds": r["seconds"],
    }


# -- running -------------------------------------------------------------------------------------------


def make_modes(
    names: list[str],
    root: Path,
    view: dict[str, str],
    cfg: config.Config,
    engine: Callable[[], Engine],
    hot: list[str],
) -> list[Mode]:
    """The modes asked for, over `view` (every file as saved: the target files without their targets' lines).

    The workspace modes hold every file, ordered as banked orders them (coldest first), the files with
    targets the most recently saved ones, the first worked on the newest: their prefix never changes during
    a run. The file modes hold the current file alone and switch with it (a prefill at depth 0)."""

    def wc_over(paths: Iterable[str], c: config.Config = cfg) -> WorkspaceCache:
        ws = Workspace(root)
        clock = 1_600_000_000_000_000_000
        order = sorted(p for p in paths if p not in hot) + [p for p in reversed(hot) if p in paths]
        for i, p in enumerate(order):
            ws.files[p] = FileState(p, view[p], clock + i, digest(view[p]))
        e = engine()
        wc = WorkspaceCache(ws, e, template_for(e), c)
        for p in hot:  # worked on, as the daemon marks a file completed in: steers the selection over budget
            if p in paths:
                wc.touch(p)
        return wc

    others = [p for p in view if p not in hot]
    shared: dict[tuple[str, str], WorkspaceCache] = {}

    def over(kind: str, paths: Iterable[str], c: config.Config) -> WorkspaceCache:
        """One cache per prefix: modes that differ only in their tails share its engine and its warm prefix."""
        key = (kind, c.prefix_order)
        if key not in shared:
            shared[key] = wc_over(paths, c)
        return shared[key]

    def made(name: str) -> Mode:
        base, *sets = name.split("@")  # workspace@prefix_lines=3@focus_tokens=0: a variant with its own settings
        c = with_settings(cfg, sets)
        if base == "workspace-deps":
            c = dataclasses.replace(c, prefix_order="deps")
        focus = c.focus_tokens > 0
        table: dict[str, Callable[[], Mode]] = {
            "file": lambda: Mode(name, over("none", [], c), with_files=False, cfg=c),
            "snippets": lambda: Mode(name, over("none", [], c), with_files=False, with_snippets=True, cfg=c),
            "workspace": lambda: Mode(name, over("all", view, c), with_files=True, with_focus=focus, cfg=c),
            "workspace-noactive": lambda: Mode(name, over("others", others, c), True, focus, cfg=c),
            "workspace-nofocus": lambda: Mode(name, over("all", view, c), with_files=True, cfg=c),
            "workspace-deps": lambda: Mode(name, over("all", view, c), True, focus, cfg=c),
        }
        return table[base]()

    return [made(n) for n in names]


def with_settings(cfg: config.Config, sets: list[str]) -> config.Config:
    """`cfg` with `KEY=VALUE` settings applied, typed as the Config field is."""
    changes: dict[str, Any] = {}
    for kv in sets:
        key, _, value = kv.partition("=")
        default = getattr(cfg, key)
        changes[key] = type(default)(value) if not isinstance(default, bool) else value.lower() in ("1", "true")
    return dataclasses.replace(cfg, **changes)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every `--source` in turn, `--targets` shared out evenly (a package with fewer gives the rest to the
    next): one run, one table over all targets, and one row per package and mode."""
    sources: list[str] = args.source
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    packages: dict[str, dict[str, Any]] = {}
    remaining = args.targets
    for i, source in enumerate(sources):
        share = -(-remaining // (len(sources) - i))
        part = run_package(source, share, args)
        remaining -= len(part["results"])
        results += part["results"]
        packages[Path(source).name] = {k: v for k, v in part.items() if k != "results"}
        gc.collect()  # the package's engines go before the next package loads its own
    return {
        "source": sources[0] if len(sources) == 1 else sources,
        "cross_file": args.cross_file,
        "targets": len(results),
        "settings": {
            "draw": args.draw,
            "prefix_lines": args.prefix_lines,
            "multiline": args.multiline,
            "suffix_tokens": args.suffix_tokens,
            "eol_suffix_tokens": args.eol_suffix_tokens,
            "focus_tokens": args.focus_tokens,
            "hot_share": args.hot_share,
            "n_ctx": args.n_ctx,
        },
        "model": str(Path(args.model) if args.model else model_store.ensure_default_model()),
        "seconds": time.perf_counter() - t0,
        "packages": packages,
        "results": results,
    }


def run_package(source: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="banked-quality-"))
    root = work / Path(source).name
    shutil.copytree(source, root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests", "test"))
    scan = Workspace(root)
    scan.scan()
    files = {p: f.text for p, f in scan.files.items() if p.endswith(".py")}
    budget = args.n_ctx - min(TAIL_RESERVE, args.n_ctx // 4)
    max_chars = int(args.hot_share * budget * CHARS_PER_TOKEN)
    # A package that fits the budget is held whole, whatever was worked on: then each file with targets
    # need only fit the hot share by itself (ordinary files qualify). Over budget, the daemon keeps the files
    # worked on within that share in all, so the files with targets must fit it together.
    fits = sum(len(f.text) for f in scan.files.values()) <= budget * CHARS_PER_TOKEN
    targets = choose_targets(
        files, n, args.cross_file, args.seed, args.per_file, max_chars, args.draw == "dense", per_file_cap=fits
    )
    print(f"{len(files)} Python files in {root.name}; {len(targets)} targets in {len({t.path for t in targets})} files")
    cfg = config.Config(
        prefix_lines=args.prefix_lines,
        suffix_tokens=args.suffix_tokens,
        eol_suffix_tokens=args.eol_suffix_tokens,
        max_lines=10,
        multiline=args.multiline,
        focus_tokens=args.focus_tokens,
        fim_order=args.fim_order,
    )
    model = Path(args.model) if args.model else model_store.ensure_default_model()
    hot = list(dict.fromkeys(t.path for t in targets))
    view = dict(files)
    for path in hot:
        view[path] = saved(files[path], [t for t in targets if t.path == path])
    modes = make_modes(args.modes.split(","), root, view, cfg, lambda: LlamaCppEngine(model, args.n_ctx, 0, 256), hot)
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    caches = list({id(m.wc): m for m in modes}.values())  # one mode per shared cache
    warm = {m.name: m.wc.sync() for m in caches if m.with_files}
    print(f"  prefilled {warm} ({time.perf_counter() - t0:.0f}s)", flush=True)
    # Which files the workspace prefix left out (over budget: only their signatures, in the symbol map): a
    # cross-file target whose definition is there is a different problem from one whose definition is whole.
    held = next((m.wc.plan() for m in caches if m.with_files), None)
    dropped = set(held.dropped) if held is not None else set()
    defines = {p: defined_names(t) for p, t in files.items()} if args.cross_file else {}
    current: str | None = None
    for t in targets:
        text = files[t.path]
        if t.path != current:
            for m in caches:
                if not m.with_files:
                    if current is not None:
                        m.put(current, None)
                    m.put(t.path, view[t.path])
            current = t.path
        cursor, expected = t.cursor(text), text[t.start : t.end]
        row: dict[str, Any] = {
            "source": source,
            "path": t.path,
            "kind": t.kind,
            "start": t.start,
            "end": t.end,
            "expected": expected,
        }
        row["line"], row["names"] = cursor.line + 1, list(t.names)
        if t.names:
            homes = sorted(p for p, ns in defines.items() if p != t.path and set(t.names) & ns)
            row["defined_in"], row["definition_in_prefix"] = homes, any(p not in dropped for p in homes)
        for m in modes:
            row[m.name] = score(m.complete(t, text, view, 48 if t.kind == "line" else 160), t, expected, cursor)
        results.append(row)
        print(
            f"  {t.kind:5} {t.path}:{row['line']} "
            + " ".join(f"{m.name}={'✔' if row[m.name]['exact'] else '·'}{row[m.name]['similarity']:.2f}" for m in modes)
            + " ("
            + " ".join(f"{row[m.name]['seconds']:.0f}" for m in modes)
            + " s)",
            flush=True,
        )
    return {
        "source": source,
        "targets": len(results),
        "files": sorted({t.path for t in targets}),
        "seconds": time.perf_counter() - t0,
        "warm_prefill_tokens": warm,
        "dropped": sorted(dropped),
        "results": results,
    }


def summarize(data: dict[str, Any]) -> tuple[list[list[Any]], dict[str, Any]]:
    modes = [k for k in data["results"][0] if isinstance(data["results"][0][k], dict)] if data["results"] else []
    rows, summary = [], {}
    for name in modes:
        rs = [r[name] for r in data["results"]]
        hits = [r["identifier_hit"] for r in rs if r["identifier_hit"] is not None]
        s = {
            "exact_match": 100 * statistics.mean(r["exact"] for r in rs),
            "exact_match_raw": 100 * statistics.mean(r["exact_raw"] for r in rs),
            "identifier_hit": 100 * statistics.mean(hits) if hits else None,
            "edit_similarity": 100 * statistics.mean(r["similarity"] for r in rs),
            "lowered_by_postprocessing": sum(r["exact_raw"] and not r["exact"] for r in rs),
            "suffix_repeats_raw": sum(r["repeats_suffix_raw"] for r in rs),
            "suffix_repeats": sum(r["repeats_suffix"] for r in rs),
            "ttft_ms_p50": statistics.median(r["ttft_ms"] for r in rs),
            "seconds_mean": statistics.mean(r["seconds"] for r in rs),
            # what the cache re-prefilled before a target, when it had to (a file switch reordering the prefix)
            "resyncs": sum(1 for r in rs if r["synced_tokens"]),
            "resync_tokens_mean": statistics.mean([r["synced_tokens"] for r in rs if r["synced_tokens"]] or [0]),
        }
        summary[name] = s
        hit = f"{s['identifier_hit']:.1f}" if s["identifier_hit"] is not None else "-"
        rows.append(
            [
                name,
                s["exact_match"],
                s["exact_match_raw"],
                hit,
                s["edit_similarity"],
                f"{s['suffix_repeats_raw']} → {s['suffix_repeats']}",
                s["ttft_ms_p50"],
                s["seconds_mean"],
                f"{s['resyncs']} ({s['resync_tokens_mean']:.0f})",
            ]
        )
    return rows, summary


def replay(path: Path, multiline: str = "auto") -> None:
    """Re-apply today's post-processing to a run's raw completions (no model): for changes to the rules."""
    data = json.loads(path.read_text())
    for r in data["results"]:
        text = (Path(r.get("source", data["source"])) / r["path"]).read_text()
        t = Target(r["path"], r["kind"], r["start"], r["end"], tuple(r.get("names", ())))
        cursor = t.cursor(text)
        decision = postprocess.decide(syntax.parse_text("python", t.buffer(text)), cursor, 10, multiline)
        for name in [k for k in r if isinstance(r[k], dict)]:
            # Decoding is greedy, so a smaller line limit today is exactly the recorded text cut at that line.
            raw = first_lines(r[name]["raw"], decision.max_lines)
            cleaned = postprocess.clean(raw, cursor, decision)
            r[name].update(
                score({**r[name], "raw": raw, "text": cleaned, "synced_tokens": 0}, t, r["expected"], cursor)
            )
    rows, summary = summarize(data)
    print_table(data, rows, summary, path.with_suffix(".replay.json"))


def per_package(data: dict[str, Any]) -> None:
    """Each package's exact match per mode (`packages.<name>.summary`), and a table of them."""
    rows = []
    for name, part in data.get("packages", {}).items():
        mine = [r for r in data["results"] if Path(r.get("source", "")).name == name]
        if not mine:
            continue
        _, summary = summarize({"results": mine})
        part["summary"] = summary
        ws, f = summary.get("workspace"), summary.get("file")
        if ws and f:
            part["workspace_minus_file_points"] = ws["exact_match"] - f["exact_match"]
        rows += [
            [
                name,
                len(mine),
                mode,
                s["exact_match"],
                "-" if s["identifier_hit"] is None else s["identifier_hit"],
                s["edit_similarity"],
            ]
            for mode, s in summary.items()
        ]
    print_rows("per package", ["package", "targets", "context", "exact %", "ident hit %", "edit sim %"], rows)


def per_class(data: dict[str, Any]) -> None:
    """Cross-file targets by where their definition is: whole in the workspace prefix, or only its signature in
    the symbol map (a package over the budget): exact match per mode (`classes` in the JSON)."""
    classes: dict[str, list[dict[str, Any]]] = {}
    for r in data["results"]:
        if "definition_in_prefix" in r:
            key = "definition in the prefix" if r["definition_in_prefix"] else "definition only in the symbol map"
            classes.setdefault(key, []).append(r)
    if not classes:
        return
    rows, out = [], {}
    for key, rs in sorted(classes.items()):
        _, summary = summarize({"results": rs})
        out[key] = {mode: {"targets": len(rs), "exact_match": s["exact_match"]} for mode, s in summary.items()}
        rows += [[key, len(rs), mode, s["exact_match"], s["edit_similarity"]] for mode, s in summary.items()]
    data["classes"] = out
    print_rows("by where the definition is", ["class", "targets", "context", "exact %", "edit sim %"], rows)


def print_table(data: dict[str, Any], rows: list[list[Any]], summary: dict[str, Any], out: Path) -> None:
    data["summary"] = summary
    per_class(data)
    if "workspace" in summary and "file" in summary:
        data["workspace_minus_file_points"] = summary["workspace"]["exact_match"] - summary["file"]["exact_match"]
    what = "cross-file" if data["cross_file"] else "random"
    sources = [data["source"]] if isinstance(data["source"], str) else data["source"]
    if len(sources) > 1:
        per_package(data)
    report(
        f"completion quality: {data['targets']} {what} targets in {', '.join(Path(s).name for s in sources)}",
        [
            "context",
            "exact %",
            "exact % raw",
            "ident hit %",
            "edit sim %",
            "suffix repeats raw → after",
            "TTFT p50 ms",
            "s/req",
            "re-prefills (mean tokens)",
        ],
        rows,
        data,
        out,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    spec = importlib.util.find_spec("pluggy")
    p.add_argument(
        "--source",
        action="append",
        help="a package directory (repeat it: one run over several packages; default: pluggy)",
    )
    p.add_argument("--targets", type=int, default=60, help="targets in all, after selection")
    p.add_argument("--cross-file", action="store_true", help="only lines that need another file (CrossCodeEval's rule)")
    p.add_argument("--modes", default="workspace,file,snippets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-file", type=int, default=12, help="targets taken from each file drawn (at most)")
    p.add_argument(
        "--draw",
        default="dense",
        choices=["dense", "random"],
        help="which files targets come from: dense (most targets per character first: short runs, small files) "
        "or random (any file that fits)",
    )
    p.add_argument(
        "--prefix-lines", type=int, default=config.Config.prefix_lines, help="lines before the cursor in the tail"
    )
    p.add_argument("--suffix-tokens", type=int, default=config.Config.suffix_tokens)
    p.add_argument(
        "--eol-suffix-tokens",
        type=int,
        default=config.Config.eol_suffix_tokens,
        help="the suffix window when the rest of the cursor's line is empty",
    )
    p.add_argument("--focus-tokens", type=int, default=config.Config.focus_tokens)
    p.add_argument(
        "--hot-share",
        type=float,
        default=HOT_SHARE,
        help="the share of the budget files with targets may take (each alone when the package fits whole)",
    )
    p.add_argument("--fim-order", default=config.Config.fim_order, choices=["psm", "spm"])
    p.add_argument("--multiline", default=config.Config.multiline, choices=config.CHOICES["multiline"])
    p.add_argument(
        "--n-ctx", type=int, default=16384, help="context of each mode's engine (the workspace budget is 4k less)"
    )
    p.add_argument("--model", help="a GGUF file (default: the embedded model); a base model is better at FIM")
    p.add_argument("--json", default="bench/results/quality.json")
    p.add_argument("--replay", help="re-apply today's post-processing to a previous run's JSON (no model)")
    args = p.parse_args()
    if args.replay:
        replay(Path(args.replay), args.multiline)
        return
    if not args.source:
        args.source = [str(Path(spec.origin).parent)] if spec and spec.origin else []
    data = run(args)
    rows, summary = summarize(data)
    print_table(data, rows, summary, Path(args.json))


if __name__ == "__main__":
    main()
