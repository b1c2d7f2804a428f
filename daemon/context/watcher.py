"""Turn file-system events (saves, `git checkout`, formatters, deletions) into batched path sets.

Events are coalesced and debounced: a checkout of a thousand files arrives as
one batch, so the cache re-plans once and re-prefills once.

On Linux the watcher speaks inotify directly (inotify_simple), because what
must not be watched matters as much as what must: excluded directories
(`node_modules`, virtualenvs, build output, anything `.gitignore`d) get no
watch at all, only the events that change file contents are asked for (not
opens or reads), and a queue overflow means one rescan, after which the
watcher is idle again. The number of watches is capped; past the cap the
watcher says so (`limited`) and the rest of the tree is seen at the next warm.
Elsewhere watchdog's native observer is used (FSEvents needs no per-directory
watches).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

Batch = Callable[[set[str], bool], None]  # (relative paths, needs full rescan)
WatchDir = Callable[[str], bool]  # relative dir ("" for the root) -> watch it?


class Watcher:
    """Debounced batches of changed paths under `root`; see the module docstring."""

    def __init__(
        self,
        root: Path,
        on_batch: Batch,
        debounce_s: float = 0.3,
        watch_dir: WatchDir = lambda rel: True,
        max_watches: int = 10000,
    ):
        self.root = root
        self.on_batch = on_batch
        self.debounce_s = debounce_s
        self.watch_dir = watch_dir
        self.max_watches = max_watches
        self.limited: str | None = None  # why part of the tree is not watched, if it is not
        self.overflows = 0
        self._lock = threading.Lock()
        self._paths: set[str] = set()
        self._rescan = False
        self._due = 0.0  # when the pending batch fires (monotonic): each event pushes it back
        self._timer: threading.Thread | None = None  # one per pending batch, not one per event
        self._stopped = threading.Event()
        self._backend: _Inotify | _Watchdog = _Inotify(self) if sys.platform.startswith("linux") else _Watchdog(self)

    @property
    def watches(self) -> int:
        return self._backend.count()

    def start(self) -> None:
        """Set up the watches (walks the tree: call it off the event loop) and start reading events."""
        self._backend.start()

    def stop(self) -> None:
        self._stopped.set()  # a pending batch's thread sees it and fires nothing
        self._backend.stop()

    def note(self, rel: str, rescan: bool = False) -> None:
        """A path changed (or, with `rescan`, something that needs a walk): fire a batch after the debounce."""
        if rel.startswith(".git/") or rel == ".git":
            return
        with self._lock:
            if rescan or rel.endswith(".gitignore"):
                self._rescan = True
            elif rel:
                self._paths.add(rel)
            self._due = time.monotonic() + self.debounce_s
            if self._timer is None:
                # A thread per batch, not a timer per event: an overflowing queue is 16,384 events read at
                # once, and starting a thread for each took longer than the rescan they were waiting for.
                self._timer = threading.Thread(target=self._fire, name=f"banked-batch-{self.root.name}", daemon=True)
                self._timer.start()

    def _fire(self) -> None:
        while True:
            with self._lock:
                left = self._due - time.monotonic()
                if left <= 0:
                    paths, rescan = self._paths, self._rescan
                    self._paths, self._rescan, self._timer = set(), False, None
                    break
            if self._stopped.wait(left):
                return
        if self._stopped.is_set():
            return
        if rescan:
            self._backend.rewalk()  # directories made while events were lost get their watches
        self.on_batch(paths, rescan)


class _Inotify:
    """inotify watches on the included directories only."""

    def __init__(self, w: Watcher):
        from inotify_simple import INotify, flags

        self.w = w
        self.flags = flags
        self.mask = (
            flags.CLOSE_WRITE
            | flags.CREATE
            | flags.DELETE
            | flags.MOVED_FROM
            | flags.MOVED_TO
            | flags.DELETE_SELF
            | flags.MOVE_SELF
            | flags.ONLYDIR
        )
        self.ino = INotify()
        self.dirs: dict[int, str] = {}  # watch descriptor -> relative dir
        self.wds: dict[str, int] = {}
        self._guard = threading.Lock()
        self._thread = threading.Thread(target=self._read, name=f"banked-watch-{w.root.name}", daemon=True)

    def count(self) -> int:
        return len(self.wds)

    def start(self) -> None:
        self.add_tree("")
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._thread.join(2.0)  # it polls every 250 ms and sees the stop flag
        self.ino.close()

    def rewalk(self) -> None:
        self.add_tree("")

    def add_tree(self, top: str) -> None:
        """Watch `top` and the included directories below it (symlinked directories are never followed)."""
        stack = [top]
        while stack:
            rel = stack.pop()
            if rel and not self.w.watch_dir(rel):
                continue
            if not self._add(rel):
                return
            try:
                entries = list(os.scandir(self.w.root / rel))
            except OSError:
                continue
            for e in entries:
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(f"{rel}/{e.name}" if rel else e.name)
                except OSError:
                    continue

    def _add(self, rel: str) -> bool:
        """Add one watch; False when no more may be added (the cap, or the system's limit)."""
        with self._guard:
            if rel in self.wds:
                return True
            if len(self.wds) >= self.w.max_watches:
                self._limit(f"more than {self.w.max_watches} directories (config max_watches)")
                return False
            try:
                wd = self.ino.add_watch(str(self.w.root / rel) if rel else str(self.w.root), self.mask)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    self._limit("the system's inotify watch limit (fs.inotify.max_user_watches) is reached")
                    return False
                return True  # vanished or unreadable: nothing to watch
            self.dirs[wd] = rel
            self.wds[rel] = wd
            return True

    def _limit(self, why: str) -> None:
        if self.w.limited is None:
            self.w.limited = (
                f"{self.w.root}: only {len(self.wds)} directories are watched ({why}); changes in the others are "
                "seen at the next `banked warm` (exclude generated trees in .gitignore or .bankedignore)"
            )
            log.warning("%s", self.w.limited)

    def _read(self) -> None:
        f = self.flags
        while not self.w._stopped.is_set():
            try:
                events = self.ino.read(timeout=250)
            except (OSError, ValueError):
                return  # closed
            for ev in events:
                if ev.mask & f.Q_OVERFLOW:
                    self.w.overflows += 1
                    log.warning("%s: file events were lost (queue overflow); rescanning once", self.w.root)
                    self.w.note("", rescan=True)
                    continue
                if ev.mask & f.IGNORED:
                    with self._guard:
                        rel = self.dirs.pop(ev.wd, None)
                        if rel is not None:
                            self.wds.pop(rel, None)
                    continue
                base = self.dirs.get(ev.wd)
                if base is None:
                    continue
                rel = f"{base}/{ev.name}" if base and ev.name else (ev.name or base)
                if ev.mask & (f.DELETE_SELF | f.MOVE_SELF):
                    self.w.note(rel, rescan=True)
                elif ev.mask & f.ISDIR:
                    if ev.mask & (f.CREATE | f.MOVED_TO):
                        self.add_tree(rel)  # files made before the watch are found by the rescan
                    self.w.note(rel, rescan=True)
                else:
                    self.w.note(rel)


class _Watchdog:
    """watchdog's recursive observer, events in excluded directories dropped (macOS, Windows)."""

    def __init__(self, w: Watcher):
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        self.w = w
        outer = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write") or (
                    event.is_directory and event.event_type == "modified"
                ):
                    return
                for raw in (event.src_path, getattr(event, "dest_path", "")):
                    if raw:
                        outer.event(raw.decode() if isinstance(raw, bytes) else raw, event.is_directory)

        self.observer = Observer()
        self.observer.schedule(Handler(), str(w.root), recursive=True)
        self.observer.daemon = True

    def count(self) -> int:
        return 1

    def start(self) -> None:
        self.observer.start()

    def stop(self) -> None:
        self.observer.stop()

    def rewalk(self) -> None:
        pass

    def event(self, raw: str, is_dir: bool) -> None:
        try:
            rel = Path(raw).relative_to(self.w.root).as_posix()
        except ValueError:
            return
        parts = rel.split("/")
        if any(not self.w.watch_dir("/".join(parts[: i + 1])) for i in range(len(parts) - 1)):
            return
        self.w.note(rel, rescan=is_dir)
