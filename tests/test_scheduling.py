"""Completions preempt background prefill and chat; cancellation stops work promptly."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from banked.daemon.ipc import rpc
from banked.daemon.serving.scheduler import YIELD, Cancelled, Job, Priority, Scheduler
from helpers import DaemonProc, make_files, make_repo


def test_scheduler_runs_by_priority_and_resumes_yielded_jobs() -> None:
    s = Scheduler()
    order: list[str] = []
    gate = threading.Event()
    blocker = s.submit(Priority.BACKGROUND, lambda j: gate.wait(5), "blocker")
    steps = {"n": 0}

    def background(job: Job) -> object:
        steps["n"] += 1
        order.append(f"bg{steps['n']}")
        return YIELD if steps["n"] < 3 else "bg done"

    bg = s.submit(Priority.BACKGROUND, background, "bg")
    chat = s.submit(Priority.CHAT, lambda j: order.append("chat"), "chat")
    comp = s.submit(Priority.COMPLETE, lambda j: order.append("complete"), "complete")
    gate.set()
    assert bg.future.result(5) == "bg done"
    assert chat.future.done() and comp.future.done() and blocker.future.done()
    assert order == ["complete", "chat", "bg1", "bg2", "bg3"]
    s.close()


def test_preempted_flag_and_cancel_before_start() -> None:
    s = Scheduler()
    seen: list[bool] = []
    started = threading.Event()

    def long_job(job: Job) -> object:
        if seen:
            return "resumed and done"
        started.set()
        deadline = time.monotonic() + 5
        while not job.preempted() and time.monotonic() < deadline:
            time.sleep(0.005)
        seen.append(job.preempted())
        return YIELD

    s.submit(Priority.BACKGROUND, long_job, "long")
    started.wait(5)
    doomed = s.submit(Priority.CHAT, lambda j: "never", "doomed")
    doomed.cancel()
    urgent = s.submit(Priority.COMPLETE, lambda j: "urgent", "urgent")
    assert urgent.future.result(5) == "urgent"
    with pytest.raises(Cancelled):
        doomed.future.result(5)
    assert seen and seen[0] is True
    s.close()


@pytest.fixture
def big_daemon(banked_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    import os

    env = {**os.environ, **banked_env, "BANKED_N_CTX": "32768", "BANKED_PREFILL_CHUNK": "128"}
    d = DaemonProc(env, Path(banked_env["BANKED_RUNTIME_DIR"]) / "daemon.sock").start()
    yield d
    d.stop()


def test_completion_does_not_wait_for_a_whole_workspace_prefill(big_daemon: DaemonProc, tmp_path: Path) -> None:
    ws = make_files(
        tmp_path / "ws", {f"pkg/m{i:02d}.py": f"def f{i}(x):\n    return x * {i}\n" * 60 for i in range(12)}
    )
    (ws / "main.py").write_text("def main():\n    return \n")
    c = big_daemon.client()
    events: list[str] = []
    warm_id = c.send_request("warm", {"root": str(ws)})
    c2 = big_daemon.client()
    # Wait until the warm is under way, then ask for a completion.
    while True:
        msg = c._next()
        if msg.method == "banked/progress":
            break
    comp = c2.call("complete", {"path": str(ws / "main.py"), "line": 1, "col": 11, "max_tokens": 3})
    events.append("complete")
    warm = c.wait(warm_id)
    events.append("warm")
    assert events == ["complete", "warm"]
    # The completion used the part of the workspace already cached, not all of it.
    assert comp["reused_tokens"] < warm["tokens"]
    assert warm["prefilled_tokens"] >= warm["tokens"] - 10
    with big_daemon.client() as c3:
        st = c3.call("status")
    assert st["cached_tokens"] >= warm["tokens"]  # the warm resumed and finished after the completion


def test_cancel_stops_a_generation(daemon: DaemonProc, tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"a.py": "def a():\n    return 1\n"})
    c = daemon.client()
    msgid = c.send_request("explain", {"path": str(ws / "a.py"), "max_tokens": 3000})
    texts = 0
    while texts < 3:
        msg = c._next()
        texts += msg.method == "banked/text"
    c.notify("cancel", {"id": msgid})
    with pytest.raises(rpc.RemoteError, match="cancelled"):
        c.wait(msgid)
    with daemon.client() as c2:
        deadline = time.monotonic() + 30
        while c2.call("status")["pending_jobs"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c2.call("status")["pending_jobs"] == 0  # nothing orphaned


def test_completion_preempts_an_explanation_which_then_finishes(daemon: DaemonProc, tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"a.py": "def a():\n    return 1\n", "b.py": "x = \n"})
    c = daemon.client()
    msgid = c.send_request("explain", {"path": str(ws / "a.py"), "max_tokens": 1500})
    while c._next().method != "banked/text":
        pass
    with daemon.client() as c2:
        comp = c2.call("complete", {"path": str(ws / "b.py"), "line": 0, "col": 4, "max_tokens": 2})
    assert comp["generated_tokens"] <= 2
    ex = c.wait(msgid)
    assert ex["generated_tokens"] > 0
    assert ex["total_ms"] >= comp["total_ms"]


def test_a_save_while_typing_waits_for_a_pause_and_keeps_completions_warm(
    banked_env: dict[str, str], tmp_path: Path
) -> None:
    """A file saved (or an unsaved buffer folded in) near the top of a large file: while the user keeps asking,
    completions run after the plan the cache holds whole and prefill only their tail; once they pause for
    `resync_idle_s`, the workspace catches up."""
    import os

    env = {**os.environ, **banked_env, "BANKED_RESYNC_IDLE_S": "3", "BANKED_SNAPSHOT_IDLE_S": "60"}
    d = DaemonProc(env, Path(banked_env["BANKED_RUNTIME_DIR"]) / "daemon.sock").start()
    try:
        body = "".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(60))
        ws = make_repo(tmp_path / "ws", {"pkg/a.py": "A = 1\n", "pkg/big.py": body + "def g(x):\n    return \n"})
        big = ws / "pkg/big.py"
        with d.client() as c:
            warm = c.call("warm", {"root": str(ws)})
            at = {"path": str(big), "line": 181, "col": 11, "max_tokens": 2}
            c.call("complete", at)
            big.write_text(big.read_text().replace("x * 1\n", "x * 100\n", 1))  # saved: most of the file to redo
            for _ in range(30):  # the watcher has seen it once the plan moved on
                if c.call("status")["workspaces"][0]["synced_tokens"] < warm["tokens"]:
                    break
                time.sleep(0.2)
            r = c.call("complete", at)
            assert r["prefilled_tokens"] < 60, "only the tail, after the plan the cache held whole"
            r = c.call("complete", {**at, "max_tokens": 3})
            assert r["prefilled_tokens"] < 10, "typing on there: nothing but what changed"
            assert c.call("status")["workspaces"][0]["synced_tokens"] < warm["tokens"], "the sync waits"
            for _ in range(8):  # typing through a suggestion needs no completion: the editor's "active" says it
                c.notify("active", {"path": str(big)})
                time.sleep(0.5)
            assert c.call("status")["workspaces"][0]["synced_tokens"] < warm["tokens"], "still typing: it waits"
            time.sleep(4)  # a pause: the sync runs
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                st = c.call("status")["workspaces"][0]
                if st["synced_tokens"] == st["tokens"]:
                    break
                time.sleep(0.2)
            assert st["synced_tokens"] == st["tokens"] > warm["tokens"]
    finally:
        d.stop()


def test_a_snapshot_keeps_the_last_tail_warm(daemon: DaemonProc, tmp_path: Path) -> None:
    """A snapshot holds the plan only, so writing it cuts the last request's tail: it is prefilled again in the
    background, and the user's next keystroke after the pause pays nothing for it."""
    body = "".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(30))
    ws = make_repo(tmp_path / "ws", {"pkg/big.py": body + "def g(x):\n    return \n"})
    at = {"path": str(ws / "pkg/big.py"), "line": 91, "col": 11, "max_tokens": 2}
    with daemon.client() as c:
        c.call("warm", {"root": str(ws)})
        first = c.call("complete", at)
        assert first["prefilled_tokens"] > 50
        deadline = time.monotonic() + 30
        while "snapshot of" not in daemon.run_log().split("complete")[-1] and time.monotonic() < deadline:
            time.sleep(0.1)  # the idle snapshot (0.3 s in the tests) runs after the completion
        time.sleep(1)
        again = c.call("complete", at)
    assert again["prefilled_tokens"] <= 2, "the tail was prefilled again after the snapshot cut it"
