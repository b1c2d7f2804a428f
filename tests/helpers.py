"""Helpers shared by the tests: files on disk and a real daemon subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from banked.daemon.ipc.client import Client


def make_files(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    return root


def make_repo(root: Path, files: dict[str, str | bytes]) -> Path:
    """Files in a git repository: a file there belongs to a workspace without being warmed first."""
    return make_files(root, {**files, ".git/HEAD": "ref: refs/heads/main\n"})


class DaemonProc:
    def __init__(self, env: dict[str, str], sock: Path):
        self.env = env
        self.sock = sock
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> DaemonProc:
        log = Path(self.env["BANKED_LOG_DIR"])
        log.mkdir(parents=True, exist_ok=True)
        self.mark = len(self.log())  # where this run's part of the (appended) log begins
        self.out = (log / "test-daemon.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "banked.daemon", "serve"],
            env=self.env,
            stdout=self.out,
            stderr=self.out,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log()}")
            try:
                with Client.connect(self.sock) as c:
                    c.call("ping")
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"daemon did not start: {self.log()}")

    def log(self) -> str:
        p = Path(self.env["BANKED_LOG_DIR"]) / "test-daemon.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def run_log(self) -> str:
        """The log of this run only (the file is shared by every start in the same log dir)."""
        return self.log()[self.mark :]

    def client(self) -> Client:
        c = Client.connect(self.sock)
        c.sock.settimeout(120)  # a test that waits for a message that never comes fails, not hangs
        return c

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        return self.proc.returncode


def wait_for(pred, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    """Poll `pred` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False
