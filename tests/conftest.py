"""Shared fixtures: a tiny real GGUF model, isolated banked dirs, a real daemon subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from banked.daemon.client import Client  # noqa: E402
from banked.daemon.config import Config  # noqa: E402
from tinymodel import write_tiny_qwen2  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_qwen2(tmp_path_factory.mktemp("model") / "tiny-qwen2.gguf")


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_qwen2(tmp_path_factory.mktemp("model2") / "other.gguf", seed=1)


@pytest.fixture
def banked_env(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Every banked path under tmp_path, and the tiny model as the configured model."""
    env = {
        "BANKED_CACHE_DIR": str(tmp_path / "cache"),
        "BANKED_RUNTIME_DIR": str(tmp_path / "run"),
        "BANKED_LOG_DIR": str(tmp_path / "log"),
        "BANKED_CONFIG_DIR": str(tmp_path / "config"),
        "BANKED_MODEL": str(tiny_model),
        "BANKED_N_CTX": "8192",
        "BANKED_PREFILL_CHUNK": "64",
        "BANKED_SNAPSHOT_IDLE_S": "0.3",
        "BANKED_COMPACT_IDLE_S": "0.3",
        "BANKED_DEBOUNCE_S": "0.1",
        "BANKED_N_THREADS": "1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def cfg(banked_env: dict[str, str]) -> Config:
    from banked.daemon import config

    return config.load()


@pytest.fixture
def engine(cfg: Config, tiny_model: Path):  # type: ignore[no-untyped-def]
    from banked.daemon.engines.llamacpp import LlamaCppEngine

    e = LlamaCppEngine(tiny_model, n_ctx=cfg.n_ctx, n_threads=1, chunk=cfg.prefill_chunk)
    yield e
    e.close()


def make_files(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    return root


class DaemonProc:
    def __init__(self, env: dict[str, str], sock: Path):
        self.env = env
        self.sock = sock
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> DaemonProc:
        log = Path(self.env["BANKED_LOG_DIR"])
        log.mkdir(parents=True, exist_ok=True)
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

    def client(self) -> Client:
        return Client.connect(self.sock)

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


@pytest.fixture
def daemon(banked_env: dict[str, str]) -> Iterator[DaemonProc]:
    env = {**os.environ, **banked_env}
    d = DaemonProc(env, Path(banked_env["BANKED_RUNTIME_DIR"]) / "daemon.sock").start()
    yield d
    d.stop()
