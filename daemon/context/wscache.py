"""The workspace cache: one token sequence holding a whole workspace, kept warm incrementally.

    [repo header][file A][file B] ... [file Z] | [hot files] | [tail]
     stable prefix, coldest first               edited lately   FIM or chat

Every update is the same three steps: compute the desired sequence, find the
first token that differs from the cache, truncate there and prefill the rest.
Nothing else ever touches the engine's cache, so it always equals a fresh
prefill of the same tokens: exact by construction.

Unsaved editor contents ("overlays") reach the prefix only through `compact`,
run at idle time; the keystroke path changes nothing but the tail.

Locking: a WorkspaceCache guards its tables (files, overlays, plan) with its
own lock; every public method that touches them holds it, and only for that
in-memory work, never across a model call or a disk read. Callers on the
daemon's event loop reach these methods through a thread, since the lock may
be held while a new plan is tokenized.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from banked.daemon.config import Config, for_engine
from banked.daemon.context import focus, repomap, secrets, syntax
from banked.daemon.context.cursor import Cursor, window_start
from banked.daemon.context.templates import QwenCoderTemplate
from banked.daemon.context.workspace import Changes, Workspace, digest
from banked.daemon.engines.base import Engine, OnProgress, ShouldStop, common_prefix, never

#: Room kept free after the prefix for a FIM or chat tail and its answer.
TAIL_RESERVE = 4096
#: At most this many characters before the cursor are tokenized for a tail (more than TAIL_RESERVE tokens).
TAIL_CHARS = 8 * TAIL_RESERVE
#: Lines the prefix window loses at a time from its start when it does not fit.
WINDOW_STEP = 10
#: Lines a prefix window may grow by as the user types on below its start before it starts again.
WINDOW_SLACK = 50


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
    texts: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (text, digest) as planned


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
        self.cfg = for_engine(cfg, engine.info.device == "cpu")  # "auto" tail settings decided for the device
        self.overlays: dict[str, str] = {}  # live unsaved contents from editors
        self._committed: dict[str, tuple[str, int]] = {}  # overlays folded into the prefix
        self._recent: dict[str, int] = {}  # files the user worked on, for the budget
        self._tok: dict[tuple[str, str], list[int]] = {}
        self._ntok: dict[tuple[str, str], int] = {}  # token counts of every file, kept or not
        self._plan: Plan | None = None
        # The last plan a sync finished: the cache holds it whole until a sync of a newer plan cuts it. A request
        # runs after it rather than after a part of the newer plan (see `context_plan`).
        self._held: Plan | None = None
        self.repomap = repomap.RepoMap()
        self._selection: set[str] | None = None  # files chosen when over budget (kept while churn is small)
        self.lock = threading.RLock()
        self._focus_key: tuple[tuple[str, int, str], ...] | None = None
        self._focus_ids: list[int] = []
        self._window_starts: dict[str, int] = {}  # path -> the first line of its last prefix window

    # -- the desired prefix ----------------------------------------------------------------

    @property
    def reserve(self) -> int:
        """Room kept after the prefix for a tail and its answer (a quarter of a small context)."""
        return min(TAIL_RESERVE, self.engine.info.n_ctx // 4)

    @property
    def budget(self) -> int:
        return max(0, self.engine.info.n_ctx - self.reserve)

    def invalidate(self) -> None:
        with self.lock:
            self._plan = None

    def apply(self, changes: Changes) -> set[str]:
        """Apply what `Workspace.read_changes` found (read outside the lock); returns the changed paths."""
        with self.lock:
            changed = self.ws.apply(changes)
            if changed:
                self._plan = None
            return changed

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
        with self.lock:
            return self._plan if self._plan is not None else self._make_plan()

    def _make_plan(self) -> Plan:
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
        if self.cfg.prefix_order == "deps" and self._recent:
            sized = self._deps_last(sized, views)
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
        self._plan = Plan(out, segments, dropped, {v.path: (v.text, v.digest) for v in views})
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

        First the files worked on, most recent first, within half the room (the one worked on last
        whenever it fits at all: its saved copy is what the short FIM tail relies on, as peers always show
        the current file and the recently opened ones); then the rest by a PageRank over imports around
        the files worked on. A new ranking replaces the previous selection only when it changes more than
        a tenth of the budget, or lacks the file worked on last: every change of selection re-prefills
        from the first file that changed, so small shifts are not worth it.
        """
        scores = repomap.rank(repomap.import_graph(infos), repomap.focus_weights(self._recent))
        ranked = sorted(sized, key=lambda vi: (-scores.get(vi[0].path, 0.0), -vi[0].key, vi[0].path))
        size = {v.path: n for v, n in sized}
        recent = [p for p in sorted(self._recent, key=lambda p: -self._recent[p]) if p in size]
        keep: set[str] = set()
        left = room
        for i, p in enumerate(recent):
            if size[p] <= left and (i == 0 or room - left + size[p] <= room // 2):
                keep.add(p)
                left -= size[p]
        for v, n in ranked:
            if v.path not in keep and n <= left:
                keep.add(v.path)
                left -= n
        prev = {p for p in self._selection or () if p in size}
        last = recent[0] if recent and recent[0] in keep else None
        if (
            prev
            and sum(size[p] for p in prev) <= room
            and sum(size[p] for p in keep ^ prev) < room // 10
            and (last is None or last in prev)
        ):
            keep = prev
        self._selection = keep
        return keep, [v.path for v, _ in ranked]

    def _deps_last(self, sized: list[tuple[_View, int]], views: list[_View]) -> list[tuple[_View, int]]:
        """`prefix_order = "deps"`: the file worked on last at the hot end, the files it imports right
        before it (Hierarchical Context Pruning's dependency order). Every switch to another file reorders
        the end of the prefix: bench/quality.py's `workspace-deps` mode measures what that costs and gains."""
        last = self._latest()
        kept = {v.path for v, _ in sized}
        if last is None or last not in kept:
            return sized
        infos = {v.path: self.repomap.info(v.path, v.text, v.digest) for v in views}
        deps = repomap.import_graph(infos).get(last, set()) & kept
        self.repomap.forget_except((v.path, v.digest) for v in views)
        rank = {**dict.fromkeys(deps, 1), last: 2}
        return sorted(sized, key=lambda vn: rank.get(vn[0].path, 0))  # stable: each group keeps its order

    def _latest(self) -> str | None:
        """The file worked on last."""
        return max(self._recent, key=lambda p: self._recent[p]) if self._recent else None

    def touch(self, path: str) -> None:
        """A file the user works on (completed in): it steers the selection when over budget (and, with
        `prefix_order = "deps"`, the order of the prefix's end)."""
        with self.lock:
            if self.cfg.prefix_order == "deps" and path != self._latest():
                self._recent[path] = time.time_ns()
                self._plan = None
            elif path not in self._recent:
                self._recent[path] = time.time_ns()
                if self._selection is not None:
                    self._plan = None

    # -- keeping the engine equal to the plan ----------------------------------------------

    def usable_prefix(self) -> int:
        """How much of the desired prefix the cache holds right now (a completion uses this)."""
        return common_prefix(self.engine.cached, self.plan().ids)

    def context_plan(self) -> Plan:
        """The plan a request runs after (model thread): the current one, or the last one a sync finished while
        the cache still holds that one whole and a sync of the current one has not yet cut into it.

        Both are exact (the cache holds a fresh prefill of either). The older one is what keeps typing warm
        while the newer one waits for an idle moment (an unsaved buffer folded in, a save): a request after a
        part of the newer plan would re-prefill its whole tail there, and again after every step of the sync,
        minutes of dark keys on a CPU when a large file changed near its top (bench/README.md, typing)."""
        with self.lock:
            plan, held = self.plan(), self._held
        if held is None or held is plan:
            return plan
        cached = self.engine.cached
        if common_prefix(cached, plan.ids) < len(held.ids) and common_prefix(cached, held.ids) == len(held.ids):
            return held
        return plan

    def holds_older_plan(self) -> bool:
        """Is a request running after an older plan than the current one (a sync of the newer one waits)?"""
        return self.context_plan() is not self.plan()

    def prefix(self) -> list[int]:
        """The part of the plan the cache holds: what a completion or a chat turn runs after."""
        ids = self.context_plan().ids
        return ids[: common_prefix(self.engine.cached, ids)]

    @property
    def synced(self) -> bool:
        return self.usable_prefix() == len(self.plan().ids)

    def sync(self, should_stop: ShouldStop = never, on_progress: OnProgress | None = None) -> int:
        """Bring the cache to the plan, in chunks; returns tokens prefilled (stops early if asked)."""
        plan = self.plan()
        n = self.engine.catch_up(plan.ids, should_stop, on_progress)
        if common_prefix(self.engine.cached, plan.ids) == len(plan.ids):
            with self.lock:
                self._held = plan
        return n

    # -- overlays --------------------------------------------------------------------------

    def set_overlay(self, path: str, text: str | None) -> None:
        with self.lock:
            if text is None:
                self.overlays.pop(path, None)
            else:
                self.overlays[path] = text
                self._recent[path] = time.time_ns()

    def overlay(self, path: str) -> str | None:
        with self.lock:
            return self.overlays.get(path)

    def compact(self) -> bool:
        """Fold live overlays into the prefix (idle time only); True if the plan changed."""
        with self.lock:
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
                self._plan = None
            return changed

    # -- tails -----------------------------------------------------------------------------

    def focus(self, path: str, cursor: Cursor, parsed: syntax.Parsed | None) -> list[int]:
        """The focus segment for a cursor in `path` (see focus.py): at most `focus_tokens` tokens."""
        budget = min(self.cfg.focus_tokens, self.reserve // 3)
        if budget <= 0:
            return []
        planned = self.context_plan().texts  # the files as the prefix the request runs after holds them
        with self.lock:
            views = {p: _View(p, text, dg, 0) for p, (text, dg) in planned.items()}
            infos = {p: self.repomap.info(p, v.text, v.digest) for p, v in views.items()}
        chosen: list[focus.Wanted] = []
        chars = 0
        saved = views[path].text if path in views else None
        for w in focus.wanted(path, parsed, cursor, infos, saved):
            size = (w.symbol.end_line - w.symbol.start_line + 1) * 40
            if chars + size > 5 * budget and chosen:
                continue
            chosen.append(w)
            chars += size
        key = tuple((w.path, w.symbol.start_line, views[w.path].digest) for w in chosen)
        if key == self._focus_key:
            return self._focus_ids
        texts = {p: views[p].text for p in {w.path for w in chosen}}
        while True:
            ids = [t for p, text in focus.render(chosen, texts, infos) for t in self.tpl.file(p, text)]
            if len(ids) <= budget or not chosen:
                break
            chosen.pop()  # the least relevant goes first
        self._focus_key, self._focus_ids = key, ids
        return ids

    def fim_tail(self, path: str, cursor: Cursor, max_tokens: int | None = None, before_it: int = 0) -> list[int]:
        """The FIM tail for `cursor` in the buffer of `path`, leaving room for `max_tokens` of answer and for
        `before_it` tokens of other tail (the focus segment).

        The prefix window is `prefix_lines` long after a jump and keeps its start while the user types on
        below it (`window_start`); the suffix is cut to `suffix_tokens` (`eol_suffix_tokens` when nothing
        follows the cursor on its line) at a line boundary where possible.
        """
        with self.lock:
            start = self._window_starts[path] = window_start(
                cursor.line, self.cfg.prefix_lines, WINDOW_SLACK, self._window_starts.get(path)
            )
        # Characters are bounded before tokenizing: a one-line 4 MB file must not become 4 MB of tokens.
        before = cursor.window(start)[-TAIL_CHARS:]
        limit = max(self.suffix_limit(cursor), 0)
        after = "\n".join([cursor.rest, *cursor.below(limit)])[: 16 * limit]
        if not self.cfg.include_secrets:
            before, after = secrets.redact(before), secrets.redact(after)
        a = self._suffix_window(after, limit)
        room = self.reserve - (self.cfg.max_tokens if max_tokens is None else max_tokens) - len(a) - before_it - 32
        b = self._prefix_window(before, max(room, 0))
        return self.tpl.fim(path, b, a, self.cfg.fim_order)

    def forget_windows(self) -> None:
        """The next tail in every file is a jump's (bench/quality.py measures each target as one)."""
        with self.lock:
            self._window_starts.clear()

    def _prefix_window(self, before: str, room: int) -> list[int]:
        """`before` as tokens within `room`. Too long, it loses whole lines from its start in steps of
        WINDOW_STEP lines, so the window's first token stays put while the user types (trimming tokens from
        the front instead would shift it, and re-prefill the whole tail, at every keystroke)."""
        b = self.tpl.tokens(before)
        lines = before.split("\n")
        while len(b) > room and len(lines) > WINDOW_STEP:
            lines = lines[WINDOW_STEP:]
            b = self.tpl.tokens("\n".join(lines))
        return b[len(b) - room :] if len(b) > room else b  # one huge line: only then by tokens

    def suffix_limit(self, cursor: Cursor) -> int:
        """Typing new code (nothing after the cursor on its line), the window is short: in PSM order each
        keystroke re-prefills all of it, and what matters most there, the next lines, fits in a few tokens."""
        if cursor.rest.strip():
            return self.cfg.suffix_tokens
        return min(self.cfg.suffix_tokens, self.cfg.eol_suffix_tokens)

    def _suffix_window(self, after: str, limit: int) -> list[int]:
        if limit <= 0 or not after:
            return []
        lines = after.split("\n")[: limit + 1]
        text = "\n".join(lines)
        ids = self.tpl.tokens(text)
        while len(ids) > limit and len(lines) > 1:
            lines = lines[:-1]
            ids = self.tpl.tokens("\n".join(lines) + "\n")
        return ids[:limit]
