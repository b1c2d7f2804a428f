"""Snapshots of a workspace's warm cache, so a restart answers from a warm cache at once.

Two files per workspace: `kv.bin` (the engine's own format) and `meta.msgpack`
(format version, model fingerprint, token ids, segment table, size and crc32
of kv.bin). Each is written to a temp file, fsynced and renamed; meta goes
last and vouches for kv.bin, so a torn pair fails its check. Anything that
does not validate is deleted with a log line and the daemon starts cold.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from . import paths
from .engines.base import Engine, EngineError
from .wscache import Segment

log = logging.getLogger(__name__)
FORMAT = 1


@dataclass
class Restored:
    ids: list[int]
    segments: list[Segment]


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


def save(engine: Engine, root: Path, segments: list[Segment]) -> Path:
    """Write the engine's cache for `root`; raises OSError/EngineError (e.g. disk full), old snapshot kept."""
    d = paths.private_dir(snapshot_dir(root))  # it holds the workspace's contents
    kv_tmp, meta_tmp = d / "kv.bin.tmp", d / "meta.msgpack.tmp"
    try:
        engine.save(kv_tmp)
        meta = {
            "format": FORMAT,
            "fingerprint": engine.info.fingerprint,
            "root": str(root),
            "ids": list(engine.cached),
            "segments": [[s.path, s.digest, s.start, s.end] for s in segments],
            "kv_size": kv_tmp.stat().st_size,
            "kv_crc32": _crc(kv_tmp),
        }
        meta_tmp.write_bytes(msgpack.packb(meta))
        # meta is renamed last: until then the old meta rejects the new kv.bin (crc), never the reverse.
        _fsync_replace(kv_tmp, d / "kv.bin")
        _fsync_replace(meta_tmp, d / "meta.msgpack")
    finally:
        kv_tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)
    return d


def discard(root: Path, why: str) -> None:
    d = snapshot_dir(root)
    log.warning("discarding snapshot %s: %s", d, why)
    shutil.rmtree(d, ignore_errors=True)


def load(engine: Engine, root: Path) -> Restored | None:
    """Restore `root`'s snapshot into the engine; None (and the snapshot deleted) if it is unusable."""
    d = snapshot_dir(root)
    meta_path, kv = d / "meta.msgpack", d / "kv.bin"
    if not meta_path.exists():
        return None
    try:
        meta: dict[str, Any] = msgpack.unpackb(meta_path.read_bytes(), strict_map_key=False)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("unknown format")
        if meta.get("fingerprint") != engine.info.fingerprint:
            raise ValueError(f"made by another model/engine ({meta.get('fingerprint')})")
        if meta.get("root") != str(root):
            raise ValueError("belongs to another workspace")
        if kv.stat().st_size != meta["kv_size"] or _crc(kv) != meta["kv_crc32"]:
            raise ValueError("cache file is truncated or corrupt")
        ids = engine.load(kv)
        if ids != list(meta["ids"]):
            raise ValueError("token ids differ from the cache file")
        segments = [Segment(str(p), str(dg), int(a), int(b)) for p, dg, a, b in meta["segments"]]
    except (OSError, ValueError, KeyError, TypeError, EngineError, msgpack.UnpackException) as exc:
        engine.truncate(0)
        discard(root, str(exc))
        return None
    log.info("restored %d cached tokens for %s from %s", len(ids), root, d)
    return Restored(ids, segments)
