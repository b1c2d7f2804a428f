"""The workspaces the daemon serves, and the one the engine's cache holds.

This module owns: which roots were warmed before (remembered across restarts),
which root a file belongs to, registering a root (scan and watcher), keeping
its files current as the disk changes, unsaved buffers and the connection that
owns each, putting a workspace into the engine's cache (saving the previous
one's snapshot, restoring this one's), and the idle timers that sync,
compact and snapshot in the background.

Threads: coroutines run on the event loop; `activate`, `save_active` and
syncs run on the model thread as scheduler jobs; `on_disk_change` runs on a
watcher thread. A WorkspaceCache guards its own tables (see wscache.py), so
the event loop calls its methods only through `asyncio.to_thread`; the other
fields of an `Entry` belong to the event loop, except `dirty` and `prefilled`,
which only the model thread writes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from banked.daemon import paths
from banked.daemon.config import Config
from banked.daemon.context.templates import QwenCoderTemplate
from banked.daemon.context.watcher import Watcher
from banked.daemon.context.workspace import Rules, Workspace
from banked.daemon.context.wscache import WorkspaceCache
from banked.daemon.engines.base import Engine, EngineError, OnProgress, common_prefix
from banked.daemon.ipc.protocol import WorkspaceStatus
from banked.daemon.serving import snapshot
from banked.daemon.serving.call import UserError
from banked.daemon.serving.scheduler import YIELD, Job, Priority, Scheduler

log = logging.getLogger(__name__)


@dataclass
class Entry:
    wc: WorkspaceCache
    watcher: Watcher | None = None
    dirty: bool = False  # cache changed since the last snapshot (model thread)
    prefilled: int = 0  # workspace tokens prefilled by background syncs, ever (model thread)
    overlay_owners: dict[str, int] = field(default_factory=dict)  # path -> the connection that sent it
    sync_job: Job | None = None
    snapshot_saved: float | None = None
    last_request: float = 0.0  # time.monotonic() of the last completion request or unsaved buffer (event loop)
    scan_lock: threading.Lock = field(default_factory=threading.Lock)  # one disk reader at a time

    @property
    def root(self) -> Path:
        return self.wc.ws.root


class KnownRoots:
    """The roots warmed before, with when each was last used; a file under one belongs to it."""

    def __init__(self, path: Path):
        self.path = path
        try:
            data = json.loads(path.read_text())
            self.roots = {str(k): float(v) for k, v in data.get("roots", {}).items()}
        except (OSError, ValueError, AttributeError):
            self.roots = {}

    def __contains__(self, root: Path) -> bool:
        return str(root) in self.roots

    def nearest(self, file: Path) -> Path | None:
        return paths.nearest_root(file, [Path(r) for r in self.roots])

    def latest(self) -> Path | None:
        return Path(max(self.roots, key=lambda r: self.roots[r])) if self.roots else None

    def remember(self, root: Path) -> None:
        """Note a use of `root`; written at most once a minute per root (not a disk write per keystroke)."""
        if time.time() - self.roots.get(str(root), 0.0) <= 60:
            return
        self.roots[str(root)] = time.time()
        tmp = paths.private_file(self.path.with_suffix(".tmp"))  # it names the user's projects: 0600
        tmp.write_text(json.dumps({"roots": self.roots}))
        os.replace(tmp, self.path)


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


class Workspaces:
    def __init__(self, cfg: Config, engine: Engine, tpl: QwenCoderTemplate, sched: Scheduler):
        self.cfg, self.engine, self.tpl, self.sched = cfg, engine, tpl, sched
        self.entries: dict[Path, Entry] = {}
        self.active: Path | None = None  # the root the engine's cache holds (model thread)
        self.known = KnownRoots(paths.state_file())
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[tuple[str, Path], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.rules = Rules(
            cfg.max_file_bytes, list(cfg.extra_excludes), cfg.include_secrets, cfg.max_files, list(cfg.extra_secrets)
        )

    # -- roots -------------------------------------------------------------------------------

    def root_for(self, file: Path, workspace: str | None) -> Path:
        """The workspace a file belongs to: the one asked for, else the nearest root warmed before, else its
        git repository. Never a folder that is none of these: that would silently read a whole tree."""
        if workspace:
            if not Path(workspace).expanduser().is_absolute():
                raise UserError("workspace must be an absolute path")
            return Path(workspace).expanduser().resolve()
        file = file.resolve()
        found = self.known.nearest(file) or find_git_root(file.parent)
        if found is None:
            raise UserError(
                f"{file} is in no workspace banked knows and in no git repository; warm its project first "
                "(`banked warm DIR`) or name it with --workspace DIR"
            )
        return found

    async def register(self, root: Path, force: bool = False) -> Entry:
        root = root.resolve()
        if not root.is_dir():
            raise UserError(f"{root} is not a directory")
        entry = self.entries.get(root)
        if entry is None:
            if not force and root not in self.known:
                refuse_broad_root(root)
            ws = Workspace(root, self.rules)
            entry = self.entries[root] = Entry(WorkspaceCache(ws, self.engine, self.tpl, self.cfg))
            await asyncio.to_thread(self.scan, entry)
            entry.watcher = Watcher(
                root,
                lambda rels, full: self.on_disk_change(root, rels, full),
                self.cfg.debounce_s,
                watch_dir=lambda rel: not ws.ignored(rel, is_dir=True),
                max_watches=self.cfg.max_watches,
            )
            await asyncio.to_thread(entry.watcher.start)  # walks the tree
        self.known.remember(root)
        return entry

    async def start(self) -> None:
        """Revive the most recently used workspace, so the first keystroke finds it warm."""
        self.loop = asyncio.get_running_loop()
        snapshot.sweep_all()
        root = self.known.latest()
        if root is not None and root.is_dir():
            entry = await self.register(root)
            self.sched.submit(Priority.BACKGROUND, lambda j: self.activate(root), "restore")
            self.schedule_sync(entry)

    def stop(self) -> None:
        for h in self._timers.values():
            h.cancel()
        for e in self.entries.values():
            if e.watcher:
                e.watcher.stop()

    # -- files on disk -----------------------------------------------------------------------

    def scan(self, entry: Entry, rels: set[str] | None = None) -> set[str]:
        """Re-read `rels` (all files if None); returns the changed paths. Never on the event loop.

        The disk is read outside the cache's lock (a slow or special file never holds it); the scan
        lock keeps two readers of one workspace from applying their results out of order.
        """
        with entry.scan_lock:
            return entry.wc.apply(entry.wc.ws.read_changes(rels))

    def on_disk_change(self, root: Path, rels: set[str], full: bool) -> None:
        """Watcher thread: refresh the changed files, then re-sync in the background."""
        entry = self.entries.get(root)
        if entry is None or self.loop is None:
            return
        changed = self.scan(entry, None if full else rels)
        if changed:
            log.info("%s: %d files changed on disk%s", root, len(changed), " (rescanned)" if full else "")
            self.loop.call_soon_threadsafe(self._after_disk_change, entry, changed)

    def _after_disk_change(self, entry: Entry, changed: set[str]) -> None:
        stale = [rel for rel in changed if rel in entry.overlay_owners]
        if stale:  # the disk moved on after the buffer was sent: the disk wins
            self._spawn(self.drop_overlays(entry, stale))
        self.schedule_sync(entry)

    # -- unsaved buffers ---------------------------------------------------------------------

    async def set_overlay(self, entry: Entry, rel: str, text: str | None, owner: int) -> None:
        entry.last_request = time.monotonic()  # an editor sends its buffer when the user pauses in their typing
        await asyncio.to_thread(entry.wc.set_overlay, rel, text)
        if text is None:
            entry.overlay_owners.pop(rel, None)
        else:
            entry.overlay_owners[rel] = owner
        self.compact_later(entry)

    def connection_closed(self, owner: int) -> None:
        """An editor went away: its unsaved buffers are nobody's any more, the files on disk are the truth."""
        for entry in self.entries.values():
            gone = [rel for rel, o in entry.overlay_owners.items() if o == owner]
            if gone:
                self._spawn(self.drop_overlays(entry, gone))

    async def drop_overlays(self, entry: Entry, rels: list[str]) -> None:
        for rel in rels:
            entry.overlay_owners.pop(rel, None)
            await asyncio.to_thread(entry.wc.set_overlay, rel, None)
        log.info("%s: dropped %d unsaved buffers (their editor closed, or the disk changed)", entry.root, len(rels))
        self.compact_later(entry)

    # -- the engine's cache (model thread) ---------------------------------------------------

    def activate(self, root: Path) -> None:
        """Make `root` the workspace held in the engine's cache."""
        if self.active == root:
            return
        self.save_active()
        if snapshot.load(self.engine, root) is None:
            self.engine.truncate(0)
        self.active = root

    def save_active(self) -> None:
        root = self.active
        entry = self.entries.get(root) if root is not None else None
        if entry is None or not entry.dirty or not self.engine.cached:
            return
        try:
            ids = entry.wc.context_plan().ids  # the held plan, while a newer one waits
            before = list(self.engine.cached)
            t = time.perf_counter()
            d = snapshot.save(self.engine, entry.root, ids)
            self._restore_tail(entry, before)
            entry.dirty = False
            if d is not None:
                entry.snapshot_saved = time.time()
                took = time.perf_counter() - t
                n = len(self.engine.cached)
                log.info("snapshot of %s: %d of the plan's %d tokens in %.2fs -> %s", root, n, len(ids), took, d)
        except (OSError, EngineError) as exc:
            # A full disk must not take the daemon down: the previous snapshot stays valid.
            log.error("could not write the snapshot of %s: %s (free some disk space)", root, exc)

    def _restore_tail(self, entry: Entry, before: list[int]) -> None:
        """A snapshot holds only the plan, so saving cut the last request's tail from the cache: prefill it
        again in the background (exact: a batched prefill of the same tokens), so the user's next keystroke
        after a pause finds it warm instead of paying for its whole tail again."""
        kept = len(self.engine.cached)
        if len(before) <= kept or before[:kept] != list(self.engine.cached):
            return

        def run(job: Job) -> Any:
            now = list(self.engine.cached)
            if self.active != entry.root or len(now) < kept or before[: len(now)] != now:
                return None  # something else used the cache since: that tail is no longer the next one's
            self.engine.catch_up(before, lambda: job.cancelled() or job.preempted())
            return YIELD if len(self.engine.cached) < len(before) and not job.cancelled() else None

        self.sched.submit(Priority.BACKGROUND, run, f"restore tail {entry.root.name}")

    def schedule_sync(self, entry: Entry, progress: OnProgress | None = None) -> Job:
        """Bring the workspace's cache up to date in the background, reusing a pending sync; one asked for
        with `progress` (a warm) is a job of its own and also puts the workspace into the cache."""
        if progress is None and entry.sync_job is not None and not entry.sync_job.future.done():
            return entry.sync_job
        root = entry.root

        def run(job: Job) -> Any:
            if self.active != root and progress is None:
                return None  # not held in the cache: synced when next activated
            wait = self._sync_wait(entry) if progress is None else 0.0
            if wait > 0:
                log.debug(
                    "sync %s waits %.1fs for the user to pause (requests run after the held plan)", root.name, wait
                )
                if self.loop is not None:
                    self.loop.call_soon_threadsafe(self.later, "sync", root, wait, lambda _r: self._resync(entry))
                return None
            self.activate(root)
            self.engine.check()
            n = entry.wc.sync(lambda: job.cancelled() or job.preempted(), progress)
            log.debug(
                "sync %s: %d tokens prefilled, %d of %d cached",
                root.name,
                n,
                len(self.engine.cached),
                len(entry.wc.plan().ids),
            )
            entry.prefilled += n
            entry.dirty = entry.dirty or n > 0
            if not entry.wc.synced:
                return YIELD
            if self.loop is not None:
                self.loop.call_soon_threadsafe(
                    self.later, "snapshot", root, self.cfg.snapshot_idle_s, self._snapshot_soon
                )
            return None

        job = entry.sync_job = self.sched.submit(Priority.BACKGROUND, run, f"sync {root.name}")
        return job

    def _resync(self, entry: Entry) -> None:
        self.schedule_sync(entry)

    def _sync_wait(self, entry: Entry) -> float:
        """Model thread: how long a background sync should wait before it changes what requests run after.

        Not at all when the user has paused for `resync_idle_s` or the cache holds nothing worth keeping;
        otherwise until that pause. A sync already under way (the held plan cut) waits too: every step of it
        would make the next request re-prefill its whole tail, while a paused one costs that once."""
        idle = self.cfg.resync_idle_s
        quiet = time.monotonic() - entry.last_request
        if idle <= 0 or quiet >= idle or self.active != entry.root:
            return 0.0
        if len(entry.wc.prefix()) < len(entry.wc.plan().ids) // 2:
            return 0.0  # little of the workspace is cached (a first warm): nothing to protect yet
        return idle - quiet

    def ensure_synced(self, entry: Entry) -> None:
        """Before a request: a stale plan, another workspace in the cache, or a cache that lost part of the
        plan (a remote server restarted) starts a background sync (which waits for a pause if it must)."""
        plan = entry.wc.last_plan
        if plan is None or self.active != entry.root or common_prefix(self.engine.cached, plan.ids) < len(plan.ids):
            self.schedule_sync(entry)

    # -- idle timers (event loop) ------------------------------------------------------------

    def later(self, what: str, root: Path, delay: float, fn: Callable[[Path], None]) -> None:
        old = self._timers.pop((what, root), None)
        if old:
            old.cancel()
        assert self.loop is not None
        self._timers[(what, root)] = self.loop.call_later(delay, fn, root)

    def _snapshot_soon(self, root: Path) -> None:
        if self.sched.pending():
            self.later("snapshot", root, self.cfg.snapshot_idle_s, self._snapshot_soon)
            return
        self.sched.submit(
            Priority.BACKGROUND, lambda j: self.save_active() if self.active == root else None, "snapshot"
        )

    def compact_later(self, entry: Entry) -> None:
        """Fold unsaved buffers into the prefix once the user has been idle for `compact_idle_s`."""
        self.later("compact", entry.root, self.cfg.compact_idle_s, self._compact_soon)

    def _compact_soon(self, root: Path) -> None:
        entry = self.entries.get(root)
        if entry is not None:
            self._spawn(self._compact(entry))

    async def _compact(self, entry: Entry) -> None:
        if await asyncio.to_thread(entry.wc.compact):
            log.debug("compaction: unsaved buffers of %s folded into the prefix", entry.root.name)
            self.schedule_sync(entry)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> list[WorkspaceStatus]:
        """Each workspace's state; read without the caches' locks (counts that may be a moment old)."""
        out = []
        for root, e in sorted(self.entries.items()):
            plan = e.wc.last_plan
            w = e.watcher
            out.append(
                WorkspaceStatus(
                    root=str(root),
                    active=root == self.active,
                    files=len(e.wc.ws.files),
                    skipped=len(e.wc.ws.skipped),
                    tokens=len(plan.ids) if plan else None,
                    synced_tokens=common_prefix(self.engine.cached, plan.ids) if plan and root == self.active else 0,
                    dropped=len(plan.dropped) if plan else None,
                    overlays=len(e.wc.overlays),
                    snapshot=str(snapshot.snapshot_dir(root)),
                    snapshot_saved=e.snapshot_saved,
                    watches=w.watches if w else 0,
                    watch_limited=w.limited if w else None,
                    watch_overflows=w.overflows if w else 0,
                )
            )
        return out
