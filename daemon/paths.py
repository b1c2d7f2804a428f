"""Where banked keeps its files.

Every location comes from platformdirs (app name "banked") and can be overridden
by an environment variable, so tests and several users on one machine never
share state by accident.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Callable, Iterable
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
    """Create `path` (banked's own directory) readable by this user only; privacy rests on it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def private_file(path: Path) -> Path:
    """Make sure `path` exists and only this user can read it (logs and state name the user's files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path


class SocketPathError(RuntimeError):
    """The socket's location is unsafe or taken; the message says what to change."""


def prepare_socket_dir(sock: Path) -> None:
    """Make the socket's directory ready without touching what is not banked's.

    A missing directory is created 0700 (it is then ours). banked's own runtime directory is
    kept 0700. Any other existing directory (BANKED_SOCKET=/tmp/x.sock) is left as it is, but
    must belong to this user or be sticky like /tmp; the socket itself is always 0600.
    """
    parent = sock.parent
    if not parent.exists():
        private_dir(parent)
        return
    st = os.stat(parent)
    if not stat.S_ISDIR(st.st_mode):
        raise SocketPathError(f"{parent} is not a directory; set BANKED_SOCKET to a path in a directory")
    mine = st.st_uid == os.getuid()
    if not mine and not st.st_mode & stat.S_ISVTX:
        raise SocketPathError(
            f"{parent} belongs to uid {st.st_uid}, not to you; set BANKED_RUNTIME_DIR or BANKED_SOCKET to a "
            "directory you own"
        )
    if mine and parent == runtime_dir():
        os.chmod(parent, 0o700)


def remove_stale_socket(sock: Path) -> bool:
    """Remove a socket left by a dead daemon; anything else at that path is never deleted."""
    try:
        st = os.lstat(sock)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathError(f"{sock} exists and is not a socket; remove it yourself or choose another BANKED_SOCKET")
    if st.st_uid != os.getuid():
        raise SocketPathError(f"{sock} is a socket of uid {st.st_uid}; choose another BANKED_SOCKET")
    sock.unlink()
    return True


def nearest_root(path: Path, roots: Iterable[Path]) -> Path | None:
    """The innermost of `roots` that holds `path` (how both the daemon and the editor pick a workspace)."""
    found = [r for r in roots if path == r or path.is_relative_to(r)]
    return max(found, key=lambda r: len(r.parts), default=None)


def isolated_env(base: Path) -> dict[str, str]:
    """`BANKED_*` settings that put every banked file under `base`: what tests and benches give each daemon
    they start, so none of them ever touches the user's own daemon, socket, cache or logs."""
    return {
        "BANKED_CACHE_DIR": str(base / "cache"),
        "BANKED_RUNTIME_DIR": str(base / "run"),
        "BANKED_LOG_DIR": str(base / "log"),
        "BANKED_CONFIG_DIR": str(base / "config"),
    }
