"""Shared fixtures: a tiny real GGUF model, isolated banked dirs, a real daemon subprocess."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from banked.daemon import paths
from banked.daemon.config import Config
from banked.daemon.engines.tinymodel import write_tiny_qwen2
from helpers import DaemonProc


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
        **paths.isolated_env(tmp_path),
        "BANKED_MODEL": str(tiny_model),
        "BANKED_N_CTX": "8192",
        "BANKED_PREFILL_CHUNK": "64",
        "BANKED_SNAPSHOT_IDLE_S": "0.3",
        "BANKED_COMPACT_IDLE_S": "0.3",
        "BANKED_DEBOUNCE_S": "0.1",
        "BANKED_N_THREADS": "1",
        # A random-weight model never writes code that parses: tests of refactoring turn validation on themselves.
        "BANKED_VALIDATE_REFACTORS": "0",
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


@pytest.fixture
def daemon(banked_env: dict[str, str]) -> Iterator[DaemonProc]:
    env = {**os.environ, **banked_env}
    d = DaemonProc(env, Path(banked_env["BANKED_RUNTIME_DIR"]) / "daemon.sock").start()
    yield d
    d.stop()
