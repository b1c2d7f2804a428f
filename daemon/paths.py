"""Where banked keeps its files.

Every location comes from platformdirs (app name "banked") and can be overridden
by an environment variable, so tests and several users on one machine never
share state by accident.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import platformdirs

APP = "banked"


def _dir(env: str, default: Callable[[str], str]) -> Path:
    value = os.environ.get(env)
    if value:
        return Path(value)
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR platformdirs falls back to /tmp/runtime-$UID: fine, and private.
        warnings.simplefilter("ignore")
        return Path(default(APP))


def config_dir() -> Path:
    return _dir("BANKED_CONFIG_DIR", platformdirs.user_config_dir)


def cache_dir() -> Path:
    return _dir("BANKED_CACHE_DIR", platformdirs.user_cache_dir)


def runtime_dir() -> Path:
    return _dir("BANKED_RUNTIME_DIR", platformdirs.user_runtime_dir)


def log_dir() -> Path:
    return _dir("BANKED_LOG_DIR", platformdirs.user_log_dir)


def socket_path() -> Path:
    value = os.environ.get("BANKED_SOCKET")
    return Path(value) if value else runtime_dir() / "daemon.sock"


def lock_file(sock: Path | None = None) -> Path:
    """Held by a running daemon until it has fully exited (snapshot written)."""
    return (sock or socket_path()).with_suffix(".lock")


def config_file() -> Path:
    return config_dir() / "config.toml"


def models_dir() -> Path:
    value = os.environ.get("BANKED_MODELS_DIR")
    return Path(value) if value else cache_dir() / "models"


def snapshots_dir() -> Path:
    return cache_dir() / "snapshots"


def state_file() -> Path:
    """Small daemon state that survives restarts (the roots that were warmed)."""
    return cache_dir() / "workspaces.json"


def private_dir(path: Path) -> Path:
    """Create `path` readable by this user only; the socket's privacy rests on it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
