"""The file watcher on real inotify: no watches on excluded trees, one rescan after an overflow, a cap that
says so, and an idle daemon that stays idle on a tree of thousands of directories."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from banked.daemon.context.watcher import Watcher
from banked.daemon.context.workspace import Workspace
from helpers import DaemonProc, make_files


class Batches:
    def __init__(self) -> None:
        self.got: list[tuple[set[str], bool]] = []
        self.cond = threading.Condition()

    def __call__(self, paths: set[str], rescan: bool) -> None:
        with self.cond:
            self.got.append((paths, rescan))
            self.cond.notify_all()

    def wait(self, pred, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
        with self.cond:
            return self.cond.wait_for(lambda: pred(self.got), timeout)


def big_tree(root: Path, excluded: int, included: int) -> Path:
    for i in range(excluded):
        d = root / "node_modules" / f"pkg{i // 100}" / f"m{i}"
        d.mkdir(parents=True)
        (d / "index.js").write_text("module.exports = 1\n")
    for i in range(included):
        d = root / "src" / f"d{i}"
        d.mkdir(parents=True)
        (d / "mod.py").write_text(f"X = {i}\n")
    return root


def watcher_for(root: Path, batches: Batches, **kw: int) -> Watcher:
    ws = Workspace(root)
    return Watcher(root, batches, 0.1, watch_dir=lambda rel: not ws.ignored(rel, is_dir=True), **kw)


def test_excluded_directories_get_no_watch_and_no_events(tmp_path: Path) -> None:
    root = big_tree(tmp_path / "ws", excluded=5000, included=100)
    b = Batches()
    w = watcher_for(root, b)
    w.start()
    try:
        assert w.watches == 1 + 1 + 100  # the root, src/, src/d*: nothing under node_modules
        (root / "node_modules/pkg3/m300/index.js").write_text("module.exports = 2\n")
        time.sleep(0.5)
        assert b.got == []
        (root / "src/d42/mod.py").write_text("X = 'edited'\n")
        assert b.wait(lambda got: any("src/d42/mod.py" in p for p, _ in got))
    finally:
        w.stop()


def test_a_queue_overflow_is_one_rescan_and_then_idle(tmp_path: Path) -> None:
    """More events than the kernel queues (16,384) while nobody reads: one rescan batch, then silence."""
    root = big_tree(tmp_path / "ws", excluded=5000, included=20)
    b = Batches()
    w = watcher_for(root, b)
    backend = w._backend
    backend.add_tree("")  # watches in place, but the reader not started yet: events pile up
    for i in range(12000):
        (root / "src/d1" / f"f{i}.py").write_text("")
    backend._thread.start()
    try:
        assert b.wait(lambda got: any(rescan for _, rescan in got)), b.got
        assert w.overflows >= 1
        time.sleep(1.5)
        settled = len(b.got)
        time.sleep(1.5)
        assert len(b.got) == settled <= 3  # idle again: no storm of rescans
    finally:
        w.stop()


def test_the_watch_cap_is_reported(tmp_path: Path) -> None:
    root = big_tree(tmp_path / "ws", excluded=0, included=200)
    w = watcher_for(root, Batches(), max_watches=50)
    w.start()
    try:
        assert w.watches == 50
        assert w.limited is not None and "only 50 directories are watched" in w.limited
    finally:
        w.stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_idle_daemon_on_thousands_of_directories_stays_idle(daemon: DaemonProc, tmp_path: Path) -> None:
    root = big_tree(tmp_path / "ws", excluded=5000, included=60)
    make_files(root, {"app.py": "def main():\n    return 0\n"})
    with daemon.client() as c:
        w = c.call("warm", {"root": str(root)})
        st = c.call("status")["workspaces"][0]
    assert w["files"] == 61 and st["watches"] == 62 and st["watch_limited"] is None
    assert daemon.proc is not None
    time.sleep(1.0)
    before = cpu_seconds(daemon.proc.pid)
    time.sleep(3.0)
    assert cpu_seconds(daemon.proc.pid) - before < 0.3  # idle means idle
    (root / "src/d7/mod.py").write_text("X = 'changed while idle'\n")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with daemon.client() as c:
            if c.call("warm", {"root": str(root)})["tokens"] > w["tokens"]:
                break
        time.sleep(0.1)
    else:
        raise AssertionError("the edit was lost")
