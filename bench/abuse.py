"""Faults and abuse at scale: the daemon survives, loses nothing, and answers as a fresh daemon would.

    python bench/abuse.py [--frames 50000] [--kills 5] [--idle 2000] [--concurrent 300] [--json PATH]

The tests prove each fault once (tests/test_fuzz.py, tests/test_reliability.py); this runs them long, on the
tests' tiny model, and reports: random frames sent and the connections they closed, whether the daemon still
answered exactly as before; SIGKILLs at each point of a snapshot write and mid-prefill, and how many restarts
restored a valid snapshot and then answered as a daemon that never had one; idle connections held at once;
concurrent requests and their errors. A table and JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from banked.daemon import faults, paths
from banked.daemon.engines.tinymodel import write_tiny_qwen2
from banked.daemon.ipc.client import Client
from banked.daemon.ipc.fuzzframes import frame
from common import Daemon, report

CRASH_POINTS = ["snapshot.kv_tmp_written", "snapshot.kv_renamed", "snapshot.meta_tmp_written", "snapshot.meta_renamed"]


def project(root: Path) -> Path:
    for i in range(12):
        p = root / "pkg" / f"m{i:02d}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(f"def f{i}_{j}(x):\n    return x * {j}\n" for j in range(12)))
    (root / ".git").mkdir()
    return root


def probe(d: Daemon, root: Path) -> str:
    d.call("warm", {"root": str(root)})
    params = {"path": str(root / "pkg/m03.py"), "line": 3, "col": 11, "max_tokens": 12, "raw": True}
    return str(d.call("complete", params)["raw_text"])


def fuzz(d: Daemon, root: Path, n: int) -> dict[str, Any]:
    before = probe(d, root)
    rng = random.Random(1)
    closed = 0
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(d.sock))
    for _ in range(n):
        data, ok = frame(rng)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        if not ok:
            closed += 1
            s.close()
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(d.sock))
    s.close()
    return {"frames": n, "connections_closed": closed, "answers_as_before": probe(d, root) == before}


def fresh(env: dict[str, str], tmp: Path, root: Path, n: int) -> str:
    e = {**env, **paths.isolated_env(tmp / f"fresh{n}")}
    d = Daemon(e).start()
    try:
        return probe(d, root)
    finally:
        d.stop()
        shutil.rmtree(tmp / f"fresh{n}", ignore_errors=True)


def kills(env: dict[str, str], tmp: Path, root: Path, per_point: int) -> dict[str, Any]:
    """SIGKILL at each snapshot-write point and mid-prefill; every restart must restore and match a fresh
    daemon."""
    good = Daemon(env).start()
    probe(good, root)
    good.stop()
    out: dict[str, Any] = {"kills": 0, "restored": 0, "matched_fresh": 0, "discarded": 0}
    n = 0
    for point in [*CRASH_POINTS, "mid-prefill"]:
        for _ in range(per_point):
            n += 1
            hot = root / f"pkg/m{(n * 5) % 12:02d}.py"
            hot.write_text(hot.read_text() + f"V{n} = {n}\n")
            extra = {} if point == "mid-prefill" else {faults.ENV: point}
            d = Daemon({**env, **extra}).start()
            log = Path(env["BANKED_LOG_DIR"]) / "bench-daemon.log"
            mark = log.stat().st_size if log.exists() else 0
            if point == "mid-prefill":
                for f in root.glob("pkg/*.py"):  # a checkout: everything changes
                    f.write_text(f.read_text() + f"# {n}\n")
                time.sleep(0.6)
                assert d.proc is not None
                d.proc.send_signal(signal.SIGKILL)
            else:
                probe(d, root)
            assert d.proc is not None
            d.proc.wait(60)
            out["kills"] += 1
            d = Daemon(env).start()
            got = probe(d, root)
            d.stop()
            text = log.read_bytes()[mark:].decode(errors="replace")  # mark counts bytes, not characters
            out["restored"] += "restored" in text
            out["discarded"] += "discarding snapshot" in text
            out["matched_fresh"] += got == fresh(env, tmp, root, n)
    return out


def idle(d: Daemon, n: int) -> dict[str, Any]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(d.sock))
        socks.append(s)
    t = time.perf_counter()
    ok = bool(d.call("ping", {})["pid"])
    ms = 1000 * (time.perf_counter() - t)
    for s in socks:
        s.close()
    return {"idle_connections": n, "ping_answered": ok, "ping_ms": round(ms, 1)}


def concurrent(d: Daemon, root: Path, n: int) -> dict[str, Any]:
    def one(i: int) -> tuple[bool, float]:
        t = time.perf_counter()
        try:
            with Client.connect(d.sock) as c:
                c.sock.settimeout(300)
                if i % 3:
                    c.call("status")
                else:
                    c.call("complete", {"path": str(root / "pkg/m01.py"), "line": 1, "col": 4, "max_tokens": 4})
            return True, time.perf_counter() - t
        except Exception:
            return False, time.perf_counter() - t

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(n)))
    return {"requests": n, "errors": sum(not ok for ok, _ in results), "max_s": round(max(t for _, t in results), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=50_000)
    p.add_argument("--kills", type=int, default=5, help="kills at each point (four snapshot points, mid-prefill)")
    p.add_argument("--idle", type=int, default=2000)
    p.add_argument("--concurrent", type=int, default=300)
    p.add_argument("--json", default="bench/results/abuse.json")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="banked-abuse-"))
    model = write_tiny_qwen2(tmp / "tiny.gguf")
    env = {**paths.isolated_env(tmp / "d"), "BANKED_MODEL": str(model), "BANKED_N_CTX": "8192",
           "BANKED_SNAPSHOT_IDLE_S": "0.3", "BANKED_N_THREADS": "1", "BANKED_DEBOUNCE_S": "0.1"}  # fmt: skip
    os.environ.pop(faults.ENV, None)
    root = project(tmp / "ws")
    data: dict[str, Any] = {}
    d = Daemon(env).start()
    try:
        data["fuzz"] = fuzz(d, root, args.frames)
        data["idle"] = idle(d, args.idle)
        data["concurrent"] = concurrent(d, root, args.concurrent)
    finally:
        d.stop()
    data["kills"] = kills(env, tmp, root, args.kills)
    rows = [
        ["random frames", f"{data['fuzz']['frames']:,} sent, {data['fuzz']['connections_closed']:,} closed their "
         f"connection", "answers as before" if data["fuzz"]["answers_as_before"] else "ANSWERS CHANGED"],
        ["idle connections", f"{data['idle']['idle_connections']:,} at once",
         f"ping answered in {data['idle']['ping_ms']} ms" if data["idle"]["ping_answered"] else "NO ANSWER"],
        ["concurrent requests", f"{data['concurrent']['requests']} (a third completions)",
         f"{data['concurrent']['errors']} errors, slowest {data['concurrent']['max_s']} s"],
        ["SIGKILLs", f"{data['kills']['kills']} (4 snapshot-write points and mid-prefill)",
         f"{data['kills']['restored']} restarts restored a snapshot, {data['kills']['discarded']} discarded one, "
         f"{data['kills']['matched_fresh']} answered as a fresh daemon"],
    ]  # fmt: skip
    report("faults and abuse (tiny model)", ["what", "how much", "outcome"], rows, data, Path(args.json))


if __name__ == "__main__":
    main()
