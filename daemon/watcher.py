"""Turn file-system events (saves, `git checkout`, formatters, deletions) into batched path sets.

Events are coalesced and debounced: a checkout of a thousand files arrives as
one batch, so the cache re-plans once and re-prefills once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

Batch = Callable[[set[str], bool], None]  # (relative paths, needs full rescan)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher):
        self.w = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        if event.is_directory and event.event_type == "modified":
            return  # the files inside report themselves; a rescan here would cost a full walk
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                p = raw.decode() if isinstance(raw, bytes) else raw
                self.w.note(Path(p), event.is_directory)


class Watcher:
    def __init__(self, root: Path, on_batch: Batch, debounce_s: float = 0.3):
        self.root = root
        self.on_batch = on_batch
        self.debounce_s = debounce_s
        self._lock = threading.Lock()
        self._paths: set[str] = set()
        self._rescan = False
        self._timer: threading.Timer | None = None
        self._observer = Observer()
        self._observer.schedule(_Handler(self), str(root), recursive=True)
        self._observer.daemon = True

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        with self._lock:
            if self._timer:
                self._timer.cancel()

    def note(self, path: Path, is_dir: bool) -> None:
        try:
            rel = path.relative_to(self.root).as_posix()
        except ValueError:
            return
        if rel in ("", ".") or rel.startswith(".git/") or rel == ".git":
            return
        with self._lock:
            if is_dir or rel.endswith(".gitignore"):
                self._rescan = True
            else:
                self._paths.add(rel)
            if self._timer:
                self._timer.cancel()
            self._timer = threading.Timer(self.debounce_s, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            paths, rescan = self._paths, self._rescan
            self._paths, self._rescan, self._timer = set(), False, None
        self.on_batch(paths, rescan)
