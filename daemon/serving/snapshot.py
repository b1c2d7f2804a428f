"""Snapshots of a workspace's warm cache, so a restart answers from a warm cache at once.

What is saved is only ever a prefix of the workspace's plan: the cache is cut to
the tokens it shares with the plan before it is written, so a tail (a FIM turn,
a chat turn, a half-typed secret) never reaches the disk, and a snapshot taken
mid-sync is a shorter prefix, never a mismatch. On restore, the token ids are
the only thing trusted; the plan is always recomputed from the files.

Crash safety works like SQLite's rollback: the last good snapshot stays valid
until a new one is complete. Per workspace:

    meta.msgpack     names the current cache file, with its size, crc32 and token ids
    kv-<gen>.bin     cache files; only the one meta names is live

A save writes `kv-<gen>.bin` (temp name, fsync, rename), then `meta.msgpack`
(temp name, fsync, rename, fsync of the directory), and only then deletes the
older cache files. A kill at any point leaves either the old pair or the new
one; temp files and unnamed cache files are swept at the next start.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
from banked.daemon import faults, paths
from banked.daemon.engines.base import Engine, EngineError, common_prefix

log = logging.getLogger(__name__)
FORMAT = 2
META = "meta.msgpack"
_KV_NAME = re.compile(r"kv-\d+\.bin")


def snapshot_dir(root: Path) -> Path:
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return paths.snapshots_dir() / f"{root.name}-{key}"


def _crc(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def _fsync_replace(tmp: Path, dest: Path) -> None:
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_meta(d: Path) -> dict[str, Any]:
    meta = msgpack.unpackb((d / META).read_bytes(), strict_map_key=False)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError("unknown format")
    kv = meta.get("kv")
    if not isinstance(kv, str) or not _KV_NAME.fullmatch(kv):
        raise ValueError("meta names no valid cache file")
    return meta


def _live_kv(d: Path) -> str | None:
    try:
        return str(_read_meta(d)["kv"])
    except (OSError, ValueError, msgpack.UnpackException):
        return None


def sweep(d: Path) -> None:
    """Remove what an interrupted save left behind: temp files and cache files meta does not name."""
    if not d.is_dir():
        return
    live = _live_kv(d)
    for p in d.iterdir():
        if p.name.endswith(".tmp") or (_KV_NAME.fullmatch(p.name) and p.name != live):
            with contextlib.suppress(OSError):
                p.unlink()


def sweep_all() -> None:
    """At daemon start: every workspace's leftovers (cheap: a directory listing each)."""
    root = paths.snapshots_dir()
    if root.is_dir():
        for d in root.iterdir():
            sweep(d)


def save(engine: Engine, root: Path, plan_ids: Sequence[int]) -> Path | None:
    """Write the part of the engine's cache that is a prefix of `plan_ids`; None if there is none.

    The engine is cut to that prefix first (dropping any tail), so what is written always equals a
    fresh prefill of the plan's first tokens. Raises OSError/EngineError (e.g. a full disk); the
    previous snapshot then stays the valid one.
    """
    engine.truncate(common_prefix(engine.cached, plan_ids))
    if not engine.cached:
        return None
    d = paths.private_dir(snapshot_dir(root))  # it holds the workspace's contents
    kv_name = f"kv-{time.time_ns()}.bin"
    kv, kv_tmp, meta_tmp = d / kv_name, d / f"{kv_name}.tmp", d / f"{META}.tmp"
    try:
        engine.save(kv_tmp)
        faults.crash_point("snapshot.kv_tmp_written")
        size, crc = kv_tmp.stat().st_size, _crc(kv_tmp)
        _fsync_replace(kv_tmp, kv)
        faults.crash_point("snapshot.kv_renamed")
        meta = {
            "format": FORMAT,
            "fingerprint": engine.info.fingerprint,
            "root": str(root),
            "ids": list(engine.cached),
            "kv": kv_name,
            "kv_size": size,
            "kv_crc32": crc,
        }
        meta_tmp.write_bytes(msgpack.packb(meta))
        faults.crash_point("snapshot.meta_tmp_written")
        _fsync_replace(meta_tmp, d / META)  # the commit point: from here on the new pair is the live one
        _fsync_dir(d)
        faults.crash_point("snapshot.meta_renamed")
    except BaseException:
        for p in (kv_tmp, meta_tmp):
            p.unlink(missing_ok=True)
        if _live_kv(d) != kv_name:
            kv.unlink(missing_ok=True)
        raise
    sweep(d)
    return d


def discard(root: Path, why: str) -> None:
    d = snapshot_dir(root)
    log.warning("discarding snapshot %s: %s", d, why)
    shutil.rmtree(d, ignore_errors=True)


def load(engine: Engine, root: Path) -> list[int] | None:
    """Restore `root`'s snapshot into the engine and return its token ids; None if there is none or it
    is unusable (then it is deleted and the engine left empty)."""
    d = snapshot_dir(root)
    sweep(d)
    if not (d / META).exists():
        return None
    try:
        meta = _read_meta(d)
        if meta.get("fingerprint") != engine.info.fingerprint:
            raise ValueError(f"made by another model/engine ({meta.get('fingerprint')})")
        if meta.get("root") != str(root):
            raise ValueError("belongs to another workspace")
        kv = d / str(meta["kv"])
        if kv.stat().st_size != meta["kv_size"] or _crc(kv) != meta["kv_crc32"]:
            raise ValueError("cache file is truncated or corrupt")
        ids = engine.load(kv)
        if ids != list(meta["ids"]):
            raise ValueError("token ids differ from the cache file")
    except (OSError, ValueError, KeyError, TypeError, EngineError, msgpack.UnpackException) as exc:
        engine.truncate(0)
        discard(root, str(exc))
        return None
    log.info("restored %d cached tokens for %s from %s", len(ids), root, d)
    return ids
