"""Protocol fuzzing: ten thousand seeded random frames, and the daemon answers exactly as before."""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

from banked.daemon.ipc.fuzzframes import frame
from helpers import DaemonProc, make_files


def drain(s: socket.socket) -> None:
    s.settimeout(0.0)
    with contextlib.suppress(BlockingIOError, ConnectionError, OSError):
        while s.recv(1 << 16):
            pass
    s.settimeout(10)


def test_ten_thousand_random_frames(daemon: DaemonProc, tmp_path: Path) -> None:
    root = make_files(tmp_path / "ws", {"a.py": "def area(r):\n    return 3.14 * r * r\n", ".git/HEAD": "x\n"})
    probe = {"path": str(root / "a.py"), "line": 1, "col": 11, "max_tokens": 8, "raw": True}
    with daemon.client() as c:
        c.call("warm", {"root": str(root)})
        before = c.call("complete", probe)["raw_text"]
    rng = random.Random(1234)
    sent = closed = 0
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(daemon.sock))
    while sent < 10_000:
        data, wellformed = frame(rng)
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            wellformed = False
        sent += 1
        if not wellformed:  # a bad frame closes its connection only: open another
            closed += 1
            s.close()
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(daemon.sock))
        elif sent % 200 == 0:
            drain(s)
    s.close()
    assert closed > 1000
    with daemon.client() as c:
        assert c.call("ping")["pid"] == daemon.proc.pid  # type: ignore[union-attr]
        assert c.call("complete", probe)["raw_text"] == before
        assert c.call("status")["workspaces"][0]["root"] == str(root)
    assert "Unhandled exception" not in daemon.log()
    assert "Traceback" not in daemon.log()
