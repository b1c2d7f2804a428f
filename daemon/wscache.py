"""The workspace cache: one token sequence holding a whole workspace, kept warm incrementally.

    [repo header][file A][file B] ... [file Z] | [hot files] | [tail]
     stable prefix, coldest first               edited lately   FIM or chat

Every update is the same three steps: compute the desired sequence, find the
first token that differs from the cache, truncate there and prefill the rest.
Nothing else ever touches the engine's cache, so it always equals a fresh
prefill of the same tokens: exact by construction.

Unsaved editor contents ("overlays") reach the prefix only through `compact`,
run at idle time; the keystroke path changes nothing but the tail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import repomap, secrets
from .config import Config
from .engines.base import Engine, Sampling, ShouldStop, TextStream, never
from .templates import QwenCoderTemplate
from .workspace import Workspace, digest

#: Room kept free after the prefix for a FIM or chat tail and its answer.
TAIL_RESERVE = 4096
#: At most this many characters before the cursor are tokenized for a tail (more than TAIL_RESERVE tokens).
TAIL_CHARS = 8 * TAIL_RESERVE


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x = np.asarray(a[:n], dtype=np.int64)
    y = np.asarray(b[:n], dtype=np.int64)
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else n


@dataclass(frozen=True)
class Segment:
    path: str  # "" for the repo header
    digest: str
    start: int
    end: int


@dataclass
class Plan:
    ids: list[int]
    segments: list[Segment]
    dropped: list[str]  # files that did not fit the token budget


@dataclass
class _View:
    path: str
    text: str
    digest: str
    key: int  # when it last changed (ns): colder files first


class WorkspaceCache:
    def __init__(self, ws: Workspace, engine: Engine, template: QwenCoderTemplate, cfg: Config):
        self.ws = ws
        self.engine = engine
        self.tpl = template
        self.cfg = cfg
        self.overlays: dict[str, str] = {}  # live unsaved contents from editors
        self._committed: dict[str, tuple[str, int]] = {}  # overlays folded into the prefix
        self._recent: dict[str, int] = {}  # files the user worked on, for the budget
        self._tok: dict[tuple[str, str], list[int]] = {}
        self._ntok: dict[tuple[str, str], int] = {}  # token counts of every file, kept or not
        self._plan: Plan | None = None
        self.repomap = repomap.RepoMap()
        self._selection: set[str] | None = None  # files chosen when over budget (kept while churn is small)

    # -- the desired prefix ----------------------------------------------------------------

    @property
    def budget(self) -> int:
        return max(0, self.engine.info.n_ctx - min(TAIL_RESERVE, self.engine.info.n_ctx // 4))

    def invalidate(self) -> None:
        self._plan = None

    @property
    def last_plan(self) -> Plan | None:
        """The current plan if one was computed since the last change (never computes one)."""
        return self._plan

    def _ids(self, path: str, text: str, dg: str) -> list[int]:
        key = (path, dg)
        ids = self._tok.get(key)
        if ids is None:
            ids = self._tok[key] = self.tpl.file(path, text)
            self._ntok[key] = len(ids)
        return ids

    def _count(self, v: _View) -> int:
        n = self._ntok.get((v.path, v.digest))
        return n if n is not None else len(self._ids(v.path, v.text, v.digest))

    def _views(self) -> list[_View]:
        views = {p: _View(p, f.text, f.digest, f.mtime_ns) for p, f in self.ws.files.items()}
        for p, (text, t) in self._committed.items():
            if self.ws.ignored(p):
                continue
            old = views.get(p)
            if old is None or old.digest != digest(text):
                views[p] = _View(p, text, digest(text), max(t, old.key if old else 0))
        return sorted(views.values(), key=lambda v: (v.key, v.path))

    def plan(self) -> Plan:
        if self._plan is not None:
            return self._plan
        header = self.tpl.header(self.ws.root.name)
        views = self._views()
        sized = [(v, self._count(v)) for v in views]
        room = self.budget - len(header)
        dropped: list[str] = []
        smap: list[int] = []
        if sum(n for _, n in sized) > room:
            infos = {v.path: self.repomap.info(v.path, v.text, v.digest) for v in views}
            self.repomap.forget_except((v.path, v.digest) for v in views)
            reserve = min(room // 10, 2048)  # room for the symbol map of what does not fit
            keep, order = self._select(sized, infos, room - reserve)
            dropped = [p for p in order if p not in keep]
            smap = self._symbol_map(dropped, infos, reserve)
            sized = [(v, n) for v, n in sized if v.path in keep]
            dropped.sort()
        else:
            self._selection = None
        out = list(header)
        segments = [Segment("", "", 0, len(header))]
        for v, _ in sized:
            ids = self._ids(v.path, v.text, v.digest)
            segments.append(Segment(v.path, v.digest, len(out), len(out) + len(ids)))
            out.extend(ids)
        if smap:  # last: it changes whenever the selection or a dropped file's definitions do
            segments.append(Segment(repomap.SYMBOL_MAP_PATH, digest(str(smap)), len(out), len(out) + len(smap)))
            out.extend(smap)
        # Token ids are kept for what is in the plan; counts (for the budget) for every file.
        kept = {(s.path, s.digest) for s in segments}
        for k in [k for k in self._tok if k not in kept]:
            del self._tok[k]
        live = {(v.path, v.digest) for v in views}
        for k in [k for k in self._ntok if k not in live]:
            del self._ntok[k]
        self._plan = Plan(out, segments, dropped)
        return self._plan

    def _symbol_map(self, dropped: list[str], infos: dict[str, repomap.FileInfo], reserve: int) -> list[int]:
        """The symbol map's tokens, ending on a whole line within `reserve` tokens."""
        chars = 4 * reserve
        for _ in range(4):
            text = repomap.symbol_map(dropped, infos, max_chars=chars)
            if not text:
                return []
            ids = self.tpl.file(repomap.SYMBOL_MAP_PATH, text)
            if len(ids) <= reserve:
                return ids
            chars = int(chars * reserve / len(ids) * 0.9)
        return ids[:reserve]

    def _select(
        self, sized: list[tuple[_View, int]], infos: dict[str, repomap.FileInfo], room: int
    ) -> tuple[set[str], list[str]]:
        """The files to keep (and all files, most relevant first) when the workspace does not fit.

        Relevance is a PageRank over imports around the files worked on. A new ranking replaces the
        previous selection only when it changes more than a tenth of the budget: every change of
        selection re-prefills from the first file that changed, so small shifts are not worth it.
        """
        scores = repomap.rank(repomap.import_graph(infos), repomap.focus_weights(self._recent))
        ranked = sorted(sized, key=lambda vi: (-scores.get(vi[0].path, 0.0), -vi[0].key, vi[0].path))
        keep: set[str] = set()
        left = room
        for v, n in ranked:
            if n <= left:
                keep.add(v.path)
                left -= n
        size = {v.path: n for v, n in sized}
        prev = {p for p in self._selection or () if p in size}
        if prev and sum(size[p] for p in prev) <= room and sum(size[p] for p in keep ^ prev) < room // 10:
            keep = prev
        self._selection = keep
        return keep, [v.path for v, _ in ranked]

    def touch(self, path: str) -> None:
        """A file the user works on (completed in): it steers the selection when over budget."""
        if path not in self._recent:
            self._recent[path] = time.time_ns()
            if self._selection is not None:
                self.invalidate()

    # -- keeping the engine equal to the plan ----------------------------------------------

    def usable_prefix(self) -> int:
        """How much of the desired prefix the cache holds right now (a completion uses this)."""
        return common_prefix(self.engine.cached, self.plan().ids)

    @property
    def synced(self) -> bool:
        return self.usable_prefix() == len(self.plan().ids)

    def sync(self, should_stop: ShouldStop = never, on_progress: Callable[[int, int], None] | None = None) -> int:
        """Bring the cache to the plan, in chunks; returns tokens prefilled (stops early if asked)."""
        ids = self.plan().ids
        n = common_prefix(self.engine.cached, ids)
        self.engine.truncate(n)
        done = 0
        chunk = self.engine.info.chunk
        while n + done < len(ids):
            if done and should_stop():
                break
            step = self.engine.prefill(ids[n + done : n + done + chunk], chunk=chunk)
            done += step
            if on_progress:
                on_progress(n + done, len(ids))
        return done

    # -- overlays --------------------------------------------------------------------------

    def set_overlay(self, path: str, text: str | None) -> None:
        if text is None:
            self.overlays.pop(path, None)
        else:
            self.overlays[path] = text
            self._recent[path] = time.time_ns()

    def compact(self) -> bool:
        """Fold live overlays into the prefix (idle time only); True if the plan changed."""
        new: dict[str, tuple[str, int]] = {}
        for p, text in self.overlays.items():
            old = self._committed.get(p)
            disk = self.ws.files.get(p)
            if disk is not None and disk.text == text:
                continue  # saved: the disk copy is the same text
            new[p] = old if old and old[0] == text else (text, time.time_ns())
        changed = new != self._committed
        self._committed = new
        if changed:
            self.invalidate()
        return changed

    # -- tails -----------------------------------------------------------------------------

    def fim_tail(self, path: str, text: str, line: int, col: int) -> list[int]:
        """The FIM tail for a cursor at (line, col), 0-based, col in characters.

        The prefix window starts on a line aligned to 50, so it does not move while the
        user types; the suffix is cut to `suffix_tokens` at a line boundary where possible.
        """
        lines = text.split("\n")
        line = max(0, min(line, len(lines) - 1))
        col = max(0, min(col, len(lines[line])))
        start = 0
        if line > self.cfg.prefix_lines:
            start = ((line - self.cfg.prefix_lines) // 50 + 1) * 50
        # Characters are bounded before tokenizing: a one-line 4 MB file must not become 4 MB of tokens.
        before = "\n".join(lines[start:line] + [lines[line][:col]])[-TAIL_CHARS:]
        after = "\n".join([lines[line][col:], *lines[line + 1 : line + 1 + max(self.cfg.suffix_tokens, 0)]])
        after = after[: 16 * max(self.cfg.suffix_tokens, 0)]
        if not self.cfg.include_secrets:
            before, after = secrets.redact(before), secrets.redact(after)
        b = self.tpl.tokens(before)
        a = self._suffix_window(after)
        room = TAIL_RESERVE - self.cfg.max_tokens - len(a) - 32
        if len(b) > room:
            b = b[len(b) - max(room, 0) :]
        return self.tpl.fim(path, b, a)

    def _suffix_window(self, after: str) -> list[int]:
        limit = self.cfg.suffix_tokens
        if limit <= 0 or not after:
            return []
        lines = after.split("\n")[: limit + 1]
        text = "\n".join(lines)
        ids = self.tpl.tokens(text)
        while len(ids) > limit and len(lines) > 1:
            lines = lines[:-1]
            ids = self.tpl.tokens("\n".join(lines) + "\n")
        return ids[:limit]


@dataclass
class Generation:
    """One streamed answer; resumable, so a completion can preempt an explanation."""

    tail: list[int]
    stops: set[int]
    max_tokens: int
    stream: TextStream
    on_text: Callable[[str], None] = lambda _t: None
    sampling: Sampling = field(default_factory=Sampling)
    generated: list[int] = field(default_factory=list)
    reused_tokens: int = -1
    prefilled_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)
    ttft_s: float | None = None
    finished: bool = False

    def metrics(self) -> dict[str, float | int]:
        now = time.perf_counter()
        return {
            "reused_tokens": max(self.reused_tokens, 0),
            "prefilled_tokens": self.prefilled_tokens,
            "generated_tokens": len(self.generated),
            "ttft_ms": round(1000 * (self.ttft_s if self.ttft_s is not None else now - self.started), 1),
            "total_ms": round(1000 * (now - self.started), 1),
        }


def run_generation(
    wc: WorkspaceCache, g: Generation, cancelled: ShouldStop = never, preempted: ShouldStop = never
) -> bool:
    """Advance `g` on the workspace's cache; True when it is finished (done, stopped or cancelled)."""
    engine = wc.engine
    prefix = wc.plan().ids[: wc.usable_prefix()]
    seq = prefix + g.tail + g.generated
    n = common_prefix(engine.cached, seq)
    if g.reused_tokens < 0:
        g.reused_tokens = n
    engine.truncate(n)

    yielded = False

    def stop() -> bool:
        nonlocal yielded
        if cancelled():
            return True
        yielded = preempted()
        return yielded

    chunk = engine.info.chunk
    while len(engine.cached) < len(seq):
        if stop():
            return not yielded
        g.prefilled_tokens += engine.prefill(seq[len(engine.cached) : len(engine.cached) + chunk])
    for tok in engine.generate(g.max_tokens - len(g.generated), g.stops, g.sampling, stop):
        g.generated.append(tok)
        text = g.stream.feed(tok)
        if g.ttft_s is None:
            g.ttft_s = time.perf_counter() - g.started
        if text:
            g.on_text(text)
        if g.stream.done:
            break
    if yielded and not g.stream.done:
        return False
    rest = g.stream.finish()
    if rest:
        g.on_text(rest)
    # Generated tokens were decoded one at a time (another kernel, other rounding): drop them, so
    # everything left in the cache came from a batched prefill and equals a fresh one exactly.
    engine.truncate(len(prefix) + len(g.tail))
    g.finished = True
    return True
