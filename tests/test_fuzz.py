"""Protocol fuzzing: ten thousand seeded random frames, and the daemon answers exactly as before."""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path
from typing import Any

import msgpack
from banked.daemon.ipc import rpc
from helpers import DaemonProc, make_files

METHODS = ["ping", "status", "warm", "complete", "explain", "refactor", "write_tests", "overlay", "cancel", "nope"]


def junk(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.randint(-(2**63), 2**64 - 1)
    if kind == 1:
        return rng.choice([None, True, False, 0.5, float("inf"), float("nan")])
    if kind == 2:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(12)))
    if kind == 3:
        return rng.randbytes(rng.randrange(12))
    if kind == 4:
        return rng.choice(["/", "/etc/passwd", "../x", "", "path", "line", "col", "root", "id", "text"])
    if kind == 5:
        return rng.randrange(-3, 3)
    if kind == 6:
        return [junk(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == 7:
        return {key(rng): junk(rng, depth + 1) for _ in range(rng.randrange(5))}
    nested: Any = 0
    for _ in range(rng.randrange(500)):  # msgpack packs up to 511 levels
        nested = [nested]
    return nested


def key(rng: random.Random) -> Any:
    """A map key: usually a parameter name; sometimes one msgpack allows and Python cannot hash (a tuple
    packs as an array, which the daemon unpacks as a list)."""
    choice = rng.randrange(6)
    if choice == 0:
        return tuple(rng.randrange(9) for _ in range(rng.randrange(3)))
    if choice == 1:
        return rng.randrange(-5, 5)
    return rng.choice(["path", "id", "line", "col", "text", "root", "start_line", "instruction"])


def frame(rng: random.Random) -> tuple[bytes, bool]:
    """One random frame and whether it is a well-formed message (which must not close the connection)."""
    shape = rng.randrange(10)
    if shape < 5:  # well-formed requests with junk params
        return rpc.request(rng.randrange(1, 2**31), rng.choice(METHODS), junk(rng)), True
    if shape < 7:  # notifications, cancels with junk ids included
        method = rng.choice(["cancel", "cancel", "overlay", "nope"])
        params = {"id": junk(rng)} if method == "cancel" and rng.random() < 0.7 else junk(rng)
        return rpc.notification(method, params), True
    if shape < 9:  # decodable msgpack that is not msgpack-RPC
        with contextlib.suppress(Exception):
            return msgpack.packb(junk(rng), use_bin_type=True), False
        return b"\xc1", False
    return rng.randbytes(rng.randrange(1, 64)), False  # not msgpack at all


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
