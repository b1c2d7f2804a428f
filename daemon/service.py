"""What the daemon does: workspaces, warm-up, completion, explanation, refactoring.

Handlers are coroutines on the daemon's event loop; every use of the model is a
job on the scheduler's single worker thread, which alone touches the engine.
The engine's cache holds one workspace at a time (the *active* one); switching
saves the old one's snapshot and restores the new one's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, paths, postprocess, snapshot, syntax
from .config import Config
from .engines.base import Engine, EngineError, TextStream
from .scheduler import YIELD, Cancelled, Job, Priority, Scheduler
from .templates import template_for
from .watcher import Watcher
from .workspace import Rules, Unreadable, Workspace
from .wscache import TAIL_RESERVE, Generation, WorkspaceCache, common_prefix, run_generation

log = logging.getLogger(__name__)

Notify = Callable[[str, dict[str, Any]], None]


class UserError(Exception):
    """A request that cannot be served as asked; the message says what to do."""

    code = "bad_request"


@dataclass
class Call:
    """One request in flight: how to stream to its client and how to cancel it."""

    id: int
    notify: Notify
    owner: int = 0  # the connection it came on (overlays belong to it)
    jobs: list[Job] = field(default_factory=list)
    cancelled: bool = False

    def text(self, text: str) -> None:
        self.notify("banked/text", {"id": self.id, "text": text})

    def progress(self, done: int, total: int, message: str) -> None:
        self.notify("banked/progress", {"id": self.id, "done": done, "total": total, "message": message})

    def cancel(self) -> None:
        self.cancelled = True
        for j in self.jobs:
            j.cancel()


@dataclass
class Entry:
    wc: WorkspaceCache
    watcher: Watcher | None = None
    dirty: bool = False  # cache changed since the last snapshot
    prefilled: int = 0  # workspace tokens prefilled by background syncs, ever
    overlay_owners: dict[str, int] = field(default_factory=dict)  # path -> the connection that sent it
    sync_job: Job | None = None
    snapshot_saved: float | None = None
    scan_lock: threading.Lock = field(default_factory=threading.Lock)


def _param(params: Any, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if not isinstance(params, dict):
        raise UserError("params must be a map")
    if name not in params or params[name] is None:
        if default is ...:
            raise UserError(f"missing parameter {name!r}")
        return default
    value = params[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise UserError(f"parameter {name!r} has the wrong type ({type(value).__name__})")
    return value


def refuse_broad_root(root: Path) -> None:
    """The file system root and the home directory are never a workspace by accident."""
    home = Path.home().resolve()
    if root == Path(root.anchor) or root == home:
        what = "the file system root" if root == Path(root.anchor) else "your home directory"
        raise UserError(
            f"{root} is {what}: banked would read every file under it; warm a project folder instead "
            "(or pass --force if you mean it)"
        )


def find_git_root(path: Path) -> Path | None:
    for d in [path, *path.parents]:
        if (d / ".git").exists():
            return d
    return None


_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(answer: str) -> str:
    """The code of a chat answer: its first fenced block, else the whole answer."""
    m = _FENCE.search(answer)
    return m.group(1) if m else answer.strip("\n") + "\n"


def reindent(original: str, new: str) -> str:
    """Keep the selection's indentation if the model dropped it."""

    def indent(s: str) -> str:
        first = next((ln for ln in s.splitlines() if ln.strip()), "")
        return first[: len(first) - len(first.lstrip())]

    want, got = indent(original), indent(new)
    if len(got) >= len(want) or not want.startswith(got):
        return new
    pad = want[len(got) :]
    return "".join(pad + ln if ln.strip() else ln for ln in new.splitlines(keepends=True))


class Daemon:
    def __init__(self, cfg: Config, engine: Engine):
        self.cfg = cfg
        self.engine = engine
        self.tpl = template_for(engine)
        self.sched = Scheduler()
        self.entries: dict[Path, Entry] = {}
        self.active: Path | None = None
        self.started = time.time()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[tuple[str, Path], asyncio.TimerHandle] = {}
        self._lock = threading.RLock()  # guards workspaces' file tables against the watcher
        self.known: dict[str, float] = self._load_known()
        self.parses = syntax.ParseCache()  # syntax trees of the buffers completions are asked for
        self.rules = Rules(
            cfg.max_file_bytes, list(cfg.extra_excludes), cfg.include_secrets, cfg.max_files, list(cfg.extra_secrets)
        )

    # -- known roots, remembered across restarts -------------------------------------------

    def _load_known(self) -> dict[str, float]:
        try:
            data = json.loads(paths.state_file().read_text())
            return {str(k): float(v) for k, v in data.get("roots", {}).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _remember(self, root: Path) -> None:
        self.known[str(root)] = time.time()
        f = paths.state_file()
        tmp = paths.private_file(f.with_suffix(".tmp"))  # it names the user's projects: 0600
        tmp.write_text(json.dumps({"roots": self.known}))
        os.replace(tmp, f)

    def root_for(self, file: Path, workspace: str | None) -> Path:
        """The workspace a file belongs to: the one asked for, else the nearest root warmed before, else its
        git repository. Never a folder that is none of these: that would silently read a whole tree."""
        if workspace:
            if not Path(workspace).expanduser().is_absolute():
                raise UserError("workspace must be an absolute path")
            return Path(workspace).expanduser().resolve()
        file = file.resolve()
        best: Path | None = None
        for r in self.known:
            rp = Path(r)
            if file.is_relative_to(rp) and (best is None or len(rp.parts) > len(best.parts)):
                best = rp
        found = best or find_git_root(file.parent)
        if found is None:
            raise UserError(
                f"{file} is in no workspace banked knows and in no git repository; warm its project first "
                "(`banked warm DIR`) or name it with --workspace DIR"
            )
        return found

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.known:
            # Revive the most recently used workspace so the first keystroke finds it warm.
            root = Path(max(self.known, key=lambda r: self.known[r]))
            if root.is_dir():
                entry = await self.register(root)
                self.sched.submit(Priority.BACKGROUND, lambda j: self._activate(root), "restore")
                self.schedule_sync(root, entry)

    async def shutdown(self) -> None:
        for h in self._timers.values():
            h.cancel()
        for e in self.entries.values():
            if e.watcher:
                e.watcher.stop()
        job = self.sched.submit(Priority.COMPLETE, lambda j: self._save_active(), "final snapshot")
        try:
            await asyncio.wait_for(asyncio.wrap_future(job.future), 120)
        except (TimeoutError, Cancelled, OSError, EngineError) as exc:
            log.warning("final snapshot not written: %s", exc)
        self.sched.close()
        self.engine.close()

    # -- workspaces ------------------------------------------------------------------------

    async def register(self, root: Path, force: bool = False) -> Entry:
        root = root.resolve()
        if not root.is_dir():
            raise UserError(f"{root} is not a directory")
        entry = self.entries.get(root)
        if entry is None and not force and str(root) not in self.known:
            refuse_broad_root(root)
        if entry is None:
            ws = Workspace(root, self.rules)
            entry = Entry(WorkspaceCache(ws, self.engine, self.tpl, self.cfg))
            self.entries[root] = entry
            await asyncio.to_thread(self._scan, entry)
            entry.watcher = Watcher(
                root,
                lambda p, full: self._on_fs(root, p, full),
                self.cfg.debounce_s,
                watch_dir=lambda rel: not ws.ignored(rel, is_dir=True),
                max_watches=self.cfg.max_watches,
            )
            await asyncio.to_thread(entry.watcher.start)  # walks the tree
        if time.time() - self.known.get(str(root), 0.0) > 60:  # not a disk write per keystroke
            self._remember(root)
        return entry

    def _scan(self, entry: Entry, rels: set[str] | None = None) -> set[str]:
        """Re-read `rels` (all files if None) and drop the plan if anything changed.

        The disk is read outside the workspace lock (a slow or special file never holds it); the
        scan lock keeps two readers of one workspace from applying their results out of order.
        """
        with entry.scan_lock:
            changes = entry.wc.ws.read_changes(rels)
            with self._lock:
                changed = entry.wc.ws.apply(changes)
                if changed:
                    entry.wc.invalidate()
            return changed

    def _on_fs(self, root: Path, rels: set[str], full: bool) -> None:
        """Watcher thread: refresh the changed files, then re-sync in the background."""
        entry = self.entries.get(root)
        if entry is None:
            return
        changed = self._scan(entry, None if full else rels)
        if changed and self.loop is not None:
            log.info("%s: %d files changed on disk%s", root, len(changed), " (rescanned)" if full else "")
            stale = [rel for rel in changed if rel in entry.overlay_owners]
            if stale:  # the disk moved on after the buffer was sent: the disk wins
                self.loop.call_soon_threadsafe(self._drop_overlays, root, entry, stale)
            self.loop.call_soon_threadsafe(self.schedule_sync, root, entry)

    def _activate(self, root: Path) -> None:
        """Worker thread: make `root` the workspace held in the engine's cache."""
        if self.active == root:
            return
        self._save_active()
        self.entries[root]
        if snapshot.load(self.engine, root) is None:
            self.engine.truncate(0)
        self.active = root

    def _save_active(self) -> None:
        root = self.active
        if root is None or root not in self.entries:
            return
        entry = self.entries[root]
        if not entry.dirty or not self.engine.cached:
            return
        try:
            with self._lock:
                ids = entry.wc.plan().ids
            t = time.perf_counter()
            d = snapshot.save(self.engine, root, ids)
            entry.dirty = False
            if d is None:
                return
            entry.snapshot_saved = time.time()
            log.info(
                "snapshot of %s: %d of the plan's %d tokens in %.2fs -> %s",
                root,
                len(self.engine.cached),
                len(ids),
                time.perf_counter() - t,
                d,
            )
        except (OSError, EngineError) as exc:
            # A full disk must not take the daemon down: the previous snapshot stays valid.
            log.error("could not write the snapshot of %s: %s (free some disk space)", root, exc)

    def schedule_sync(self, root: Path, entry: Entry, call: Call | None = None) -> Job:
        """Bring `root`'s cache up to date in the background; reuses a pending sync job."""
        if entry.sync_job is not None and not entry.sync_job.future.done() and call is None:
            return entry.sync_job

        def progress(done: int, total: int) -> None:
            if call is not None and self.loop is not None:
                self.loop.call_soon_threadsafe(call.progress, done, total, "prefilling workspace")

        def run(job: Job) -> Any:
            if self.active != root and call is None:
                return None  # not held in the cache: synced when next activated
            self._activate(root)
            with self._lock:
                entry.wc.plan()
            n = entry.wc.sync(lambda: job.cancelled() or job.preempted(), progress)
            entry.prefilled += n
            if n:
                entry.dirty = True
            if not entry.wc.synced:
                return YIELD
            if self.loop is not None:
                self.loop.call_soon_threadsafe(
                    self._later, "snapshot", root, self.cfg.snapshot_idle_s, self._snapshot_soon
                )
            return None

        job = self.sched.submit(Priority.BACKGROUND, run, f"sync {root.name}")
        entry.sync_job = job
        return job

    def _later(self, what: str, root: Path, delay: float, fn: Callable[[Path], None]) -> None:
        old = self._timers.pop((what, root), None)
        if old:
            old.cancel()
        assert self.loop is not None
        self._timers[(what, root)] = self.loop.call_later(delay, fn, root)

    def _snapshot_soon(self, root: Path) -> None:
        if self.sched.pending():
            self._later("snapshot", root, self.cfg.snapshot_idle_s, self._snapshot_soon)
            return
        self.sched.submit(
            Priority.BACKGROUND, lambda j: self._save_active() if self.active == root else None, "snapshot"
        )

    def _compact_soon(self, root: Path) -> None:
        entry = self.entries.get(root)
        if entry is None:
            return
        with self._lock:
            changed = entry.wc.compact()
        if changed:
            self.schedule_sync(root, entry)

    # -- helpers for requests ---------------------------------------------------------------

    async def _run(self, call: Call, priority: Priority, fn: Callable[[Job], Any], name: str) -> Any:
        if call.cancelled:  # cancelled (or its client gone) before its job existed
            raise UserError("cancelled")
        job = self.sched.submit(priority, fn, name)
        call.jobs.append(job)
        try:
            return await asyncio.wrap_future(job.future)
        except Cancelled as exc:
            raise UserError("cancelled") from exc

    async def _file(self, params: Any) -> tuple[Path, Entry, str]:
        """The request's file, its workspace (registered on first use) and its relative path.

        Call only after every other parameter is validated: registering scans a tree.
        """
        path = Path(_param(params, "path", str)).expanduser()
        if not path.is_absolute():
            raise UserError("path must be absolute")
        if path.is_dir():
            raise UserError(f"{path} is a directory, not a file")
        if path.exists() and not path.is_file():
            raise UserError(f"{path} is not a regular file (a pipe, a socket or a device)")
        if not path.exists() and _param(params, "text", str, None) is None:
            raise UserError(f"{path} does not exist")
        root = self.root_for(path, _param(params, "workspace", str, None))
        entry = await self.register(root)
        ws = entry.wc.ws
        rel = ws.relative(path.resolve())
        if rel is None:
            raise UserError(f"{path} is outside the workspace {root}")
        if ws.is_secret(rel):
            raise UserError(f"{rel} is on banked's deny list of credential files: it is never read into a prompt")
        return path, entry, rel

    async def _text(self, entry: Entry, path: Path, rel: str, params: Any) -> str:
        """The buffer's text: as sent, else the unsaved overlay, else the file (read off the event loop)."""
        sent: str | None = _param(params, "text", str, None)
        text = sent if sent is not None else entry.wc.overlays.get(rel)
        if text is None:
            try:
                text = (await asyncio.to_thread(entry.wc.ws.load, rel, self.cfg.max_buffer_bytes))[0]
            except FileNotFoundError as exc:
                raise UserError(f"{path} does not exist") from exc
            except Unreadable as exc:
                raise UserError(f"{path}: {exc}") from exc
        if len(text) > self.cfg.max_buffer_bytes:
            raise UserError(
                f"{path} is {len(text) / 2**20:.1f} MiB; banked works in buffers up to "
                f"{self.cfg.max_buffer_bytes / 2**20:.1f} MiB (config max_buffer_bytes)"
            )
        return text

    def _step(self, job: Job, entry: Entry, root: Path, g: Generation) -> Any:
        """Worker thread: advance a generation; YIELD lets a more urgent job run first."""
        self._activate(root)
        if not run_generation(entry.wc, g, job.cancelled, job.preempted):
            return YIELD
        if job.cancelled():
            raise Cancelled(job.name)
        return g

    def _ensure_synced(self, root: Path, entry: Entry) -> None:
        with self._lock:
            stale = entry.wc.last_plan is None
        if stale or self.active != root:
            self.schedule_sync(root, entry)

    # -- methods ---------------------------------------------------------------------------

    async def m_ping(self, call: Call, params: Any) -> Any:
        return {"pid": os.getpid(), "version": __version__}

    async def m_status(self, call: Call, params: Any) -> Any:
        info = self.engine.info.as_dict()
        running = self.sched.running
        wss = []
        for root, e in sorted(self.entries.items()):
            plan = e.wc.last_plan
            synced = common_prefix(self.engine.cached, plan.ids) if plan and root == self.active else 0
            wss.append(
                {
                    "root": str(root),
                    "active": root == self.active,
                    "files": len(e.wc.ws.files),
                    "skipped": len(e.wc.ws.skipped),
                    "tokens": len(plan.ids) if plan else None,
                    "synced_tokens": synced,  # of `tokens`, how many the cache holds now
                    "dropped": len(plan.dropped) if plan else None,
                    "overlays": len(e.wc.overlays),
                    "watches": e.watcher.watches if e.watcher else 0,
                    "watch_limited": e.watcher.limited if e.watcher else None,
                    "watch_overflows": e.watcher.overflows if e.watcher else 0,
                    "snapshot": str(snapshot.snapshot_dir(root)),
                    "snapshot_saved": e.snapshot_saved,
                }
            )
        return {
            "pid": os.getpid(),
            "version": __version__,
            "uptime_s": round(time.time() - self.started, 1),
            "engine": info,
            "cached_tokens": len(self.engine.cached),
            "capacity": info["n_ctx"],
            "pending_jobs": self.sched.pending(),
            "running_job": running.name if running else None,
            "queued_jobs": self.sched.queued(),
            "jobs": dict(sorted(self.sched.outcomes.items())),
            "workspaces": wss,
            "known_roots": sorted(self.known),
            "socket": str(paths.socket_path()),
            "snapshots_dir": str(paths.snapshots_dir()),
        }

    async def m_warm(self, call: Call, params: Any) -> Any:
        t0 = time.perf_counter()
        root = Path(_param(params, "root", str)).expanduser()
        if not root.is_absolute():
            raise UserError("root must be an absolute path")
        entry = await self.register(root.resolve(), force=_param(params, "force", bool, False))
        before = entry.prefilled  # counts a sync the watcher started for us, too
        await asyncio.to_thread(self._scan, entry)
        job = self.schedule_sync(root, entry, call)
        call.jobs.append(job)
        try:
            await asyncio.wrap_future(job.future)
        except Cancelled as exc:
            raise UserError("cancelled") from exc
        plan = entry.wc.plan()
        return {
            "root": str(root),
            "files": len(entry.wc.ws.files),
            "skipped": dict(sorted(entry.wc.ws.skipped.items())),
            "tokens": len(plan.ids),
            "dropped": plan.dropped,
            "prefilled_tokens": entry.prefilled - before,
            "seconds": round(time.perf_counter() - t0, 3),
            "warnings": [w for w in (entry.watcher.limited if entry.watcher else None,) if w],
        }

    async def m_overlay(self, call: Call, params: Any) -> Any:
        text = _param(params, "text", str, None)
        path, entry, rel = await self._file(params)
        with self._lock:
            entry.wc.set_overlay(rel, text)
        if text is None:
            entry.overlay_owners.pop(rel, None)
        else:
            entry.overlay_owners[rel] = call.owner
        self._later("compact", entry.wc.ws.root, self.cfg.compact_idle_s, self._compact_soon)
        return {"path": rel, "overlay": text is not None}

    def connection_closed(self, owner: int) -> None:
        """An editor went away: its unsaved buffers are nobody's any more, the files on disk are the truth."""
        for root, entry in self.entries.items():
            gone = [rel for rel, o in entry.overlay_owners.items() if o == owner]
            if gone:
                self._drop_overlays(root, entry, gone)

    def _drop_overlays(self, root: Path, entry: Entry, rels: list[str]) -> None:
        with self._lock:
            for rel in rels:
                entry.wc.set_overlay(rel, None)
        for rel in rels:
            entry.overlay_owners.pop(rel, None)
        log.info("%s: dropped %d unsaved buffers (their editor closed, or the file changed on disk)", root, len(rels))
        if self.loop is not None:
            self._later("compact", root, self.cfg.compact_idle_s, self._compact_soon)

    async def m_complete(self, call: Call, params: Any) -> Any:
        t0 = time.perf_counter()
        line = _param(params, "line", int)
        col = _param(params, "col", int)
        if line < 0 or col < 0:
            raise UserError("line and col are 0-based and must not be negative")
        max_tokens = _param(params, "max_tokens", int, self.cfg.max_tokens)
        max_lines_param = _param(params, "max_lines", int, None)
        path, entry, rel = await self._file(params)
        root = entry.wc.ws.root
        text = await self._text(entry, path, rel, params)
        lines = text.split("\n")
        line = min(line, len(lines) - 1)
        col = min(col, len(lines[line]))

        def shape() -> postprocess.Decision:
            """One line mid-line, in an argument list, string or comment; a block after an opener or on an
            empty line. Parsing is CPU work: never on the event loop."""
            parsed = self.parses.parse(f"{root}/{rel}", text)
            return postprocess.decide(parsed, text, line, col, self.cfg.max_lines)

        decision = await asyncio.to_thread(shape)
        max_lines = decision.max_lines if max_lines_param is None else max_lines_param
        with self._lock:
            entry.wc.touch(rel)
        self._ensure_synced(root, entry)

        def build(job: Job) -> Any:
            with self._lock:
                entry.wc.plan()
            tail = entry.wc.fim_tail(rel, text, line, col)
            g = Generation(
                tail,
                self.tpl.fim_stops,
                max_tokens,
                TextStream(self.engine, max_lines=max_lines),
                on_text=self._stream(call),
            )
            return self._step(job, entry, root, g)

        g: Generation = await self._run(call, Priority.COMPLETE, build, f"complete {rel}")
        self._later("compact", root, self.cfg.compact_idle_s, self._compact_soon)
        raw = g.stream.text
        after = "\n".join([lines[line][col:], *lines[line + 1 :]])
        cleaned = raw if params.get("raw") else postprocess.clean(raw, lines[line][:col], after, decision)
        return {
            "text": cleaned,
            "raw_text": raw,
            "decision": decision.why,
            **g.metrics(),
            "engine": self.engine.info.name,
            "model": self.engine.info.model,
            "path": rel,
            "workspace": str(root),
            "daemon_ms": round(1000 * (time.perf_counter() - t0), 3),  # all of this request's time in the daemon
        }

    def _stream(self, call: Call) -> Callable[[str], None]:
        loop = self.loop
        assert loop is not None

        def send(text: str) -> None:
            loop.call_soon_threadsafe(call.text, text)

        return send

    async def _chat(
        self, call: Call, params: Any, prompt: Callable[[str, str, int, int], str]
    ) -> tuple[Generation, dict[str, Any], str]:
        """Run a chat turn on the selected lines; returns the answer, its metadata and the file text used."""
        start_param = _param(params, "start_line", int, None)
        end_param = _param(params, "end_line", int, None)
        cursor = _param(params, "cursor_line", int, None)  # 0-based; with no lines given: the code around it
        max_tokens = _param(params, "max_tokens", int, self.cfg.chat_max_tokens)
        path, entry, rel = await self._file(params)
        root = entry.wc.ws.root
        text = await self._text(entry, path, rel, params)
        lines = text.splitlines(keepends=True)
        if start_param is None and end_param is None and cursor is not None:
            start, end = await asyncio.to_thread(self._target, root, rel, text, cursor)
        else:
            start = 1 if start_param is None else start_param
            end = len(lines) if end_param is None else end_param
        if not (1 <= start <= max(end, 1) and end <= max(len(lines), 1)):
            raise UserError(f"lines {start}-{end} are not within {rel} (1-{len(lines)})")
        selected = "".join(lines[start - 1 : end])
        user = prompt(rel, selected, start, end)
        self._ensure_synced(root, entry)

        def build(job: Job) -> Any:
            g = getattr(job, "generation", None)
            if g is None:
                tail = self.tpl.chat(user)
                if len(tail) + max_tokens > TAIL_RESERVE:
                    raise UserError(
                        f"the selection is too large ({len(tail)} tokens; at most "
                        f"{TAIL_RESERVE - max_tokens}): select fewer lines"
                    )
                g = Generation(
                    tail,
                    self.tpl.chat_stops,
                    max_tokens,
                    TextStream(self.engine),
                    on_text=self._stream(call),
                )
                job.generation = g  # type: ignore[attr-defined]
            return self._step(job, entry, root, g)

        g = await self._run(call, Priority.CHAT, build, f"chat {rel}")
        meta = {
            "path": rel,
            "start_line": start,
            "end_line": end,
            "original": selected,
            "digest": hashlib.sha256(text.encode()).hexdigest(),
            "workspace": str(root),
        }
        return g, meta, text

    def _target(self, root: Path, rel: str, text: str, cursor: int) -> tuple[int, int]:
        """The enclosing definition (tree-sitter), else the top-level block around the cursor."""
        parsed = self.parses.parse(f"{root}/{rel}", text)
        found = syntax.enclosing_definition(parsed, cursor) if parsed is not None else None
        return found or syntax.indented_block(text.splitlines(), cursor)

    def _rewrite_errors(self, rel: str, text: str, start: int, end: int, replacement: str) -> list[int]:
        """Lines (1-based) where the file with the rewrite applied no longer parses; [] when it does."""
        language = syntax.language_of(rel)
        if language is None or not self.cfg.validate_refactors:
            return []
        lines = text.splitlines(keepends=True)
        new = "".join(lines[: start - 1]) + replacement + "".join(lines[end:])
        before = syntax.error_lines(syntax.parse_text(language, text))
        after = syntax.error_lines(syntax.parse_text(language, new))
        return [] if len(after) <= len(before) else [r + 1 for r in after]

    def _answer(self, g: Generation, meta: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """A chat method's reply: its own fields, then timings, the selection and the engine."""
        return {**fields, **g.metrics(), **meta, "engine": self.engine.info.name, "model": self.engine.info.model}

    async def m_explain(self, call: Call, params: Any) -> Any:
        def prompt(rel: str, code: str, a: int, b: int) -> str:
            return (
                f"Explain what this code from {rel} (lines {a}-{b}) does, for a developer "
                f"reading it for the first time. Mention how it fits the workspace.\n\n"
                f"```\n{code}```"
            )

        g, meta, _ = await self._chat(call, params, prompt)
        return self._answer(g, meta, text=g.stream.text)

    async def m_refactor(self, call: Call, params: Any) -> Any:
        instruction = _param(params, "instruction", str)

        def prompt(rel: str, code: str, a: int, b: int) -> str:
            return (
                f"Rewrite this code from {rel} (lines {a}-{b}) as follows: {instruction}\n"
                "Reply with only the complete new code for these lines in one fenced code "
                f"block, keeping the indentation.\n\n```\n{code}```"
            )

        for attempt in (1, 2):  # one retry, told why
            g, meta, text = await self._chat(call, params, prompt)
            replacement = reindent(meta["original"], extract_code(g.stream.text))
            errors = await asyncio.to_thread(
                self._rewrite_errors, meta["path"], text, meta["start_line"], meta["end_line"], replacement
            )
            if not errors:
                break
            if attempt == 2:
                raise UserError(
                    f"the model's rewrite of {meta['path']} does not parse (near line {errors[0]}), twice; nothing "
                    "was changed: try a smaller selection or a more precise instruction"
                )
            log.info("refactor of %s did not parse (lines %s); retrying once", meta["path"], errors)
            instruction += "\n(Your previous answer was not valid code: reply with code that parses.)"
        return self._answer(g, meta, replacement=replacement, answer=g.stream.text)

    async def m_write_tests(self, call: Call, params: Any) -> Any:
        def prompt(rel: str, code: str, a: int, b: int) -> str:
            return (
                f"Write unit tests for this code from {rel} (lines {a}-{b}), in the test framework the "
                "workspace already uses (pytest for Python). Import what they test from its module. "
                f"Reply with only the test code in one fenced code block.\n\n```\n{code}```"
            )

        g, meta, _ = await self._chat(call, params, prompt)
        return self._answer(g, meta, code=extract_code(g.stream.text), answer=g.stream.text)

    def methods(self) -> dict[str, Callable[[Call, Any], Awaitable[Any]]]:
        return {name[2:]: getattr(self, name) for name in dir(self) if name.startswith("m_")}
