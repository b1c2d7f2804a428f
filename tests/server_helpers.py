"""A real llama.cpp `llama-server` (built from the pinned sources by `make install-server`) for the tests."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from banked.daemon.cli.team_server import server_command
from banked.daemon.engines import llama_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary() -> Path:
    found = llama_server.find()
    if found is None:
        pytest.fail(
            "llama-server is not built: `make install-server` builds it from the pinned sources (make test does)"
        )
    return found


class ServerProc:
    """llama-server on loopback with the tests' tiny model: `parallel` slots of `per_slot` tokens each."""

    def __init__(self, model: Path, tmp: Path, parallel: int = 2, per_slot: int = 4096, key_file: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.save_dir = tmp / "slots"
        self.save_dir.mkdir(parents=True, exist_ok=True)
        self.log = tmp / "llama-server.log"
        self.cmd = server_command(
            binary(), model, "127.0.0.1", self.port, parallel, per_slot, self.save_dir, key_file, threads=1
        )
        self.cmd += ["--flash-attn", "off"]  # as the daemon's local engine computes (bench/attention.py)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> ServerProc:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env={})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if json.loads(r.read()).get("status") == "ok":
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"llama-server did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
