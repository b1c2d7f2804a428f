"""Snapshots: a restart answers from a warm cache; a bad snapshot is discarded, never a crash."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from banked.daemon import snapshot
from banked.daemon.config import Config
from banked.daemon.engines.llamacpp import LlamaCppEngine
from banked.daemon.templates import template_for
from banked.daemon.workspace import Workspace
from banked.daemon.wscache import WorkspaceCache
from helpers import DaemonProc, make_files

FILES = {f"pkg/m{i}.py": f"def f{i}(x):\n    return x + {i}\n" * 8 for i in range(6)}


def warmed(tmp_path: Path, cfg: Config, engine: LlamaCppEngine) -> WorkspaceCache:
    ws = Workspace(make_files(tmp_path / "ws", FILES))
    ws.scan()
    wc = WorkspaceCache(ws, engine, template_for(engine), cfg)
    wc.sync()
    return wc


def test_round_trip(tmp_path: Path, cfg: Config, engine: LlamaCppEngine, tiny_model: Path) -> None:
    wc = warmed(tmp_path, cfg, engine)
    d = snapshot.save(engine, wc.ws.root, wc.plan().segments)
    assert (d / "kv.bin").stat().st_size > 0
    other = LlamaCppEngine(tiny_model, n_ctx=cfg.n_ctx, n_threads=1)
    restored = snapshot.load(other, wc.ws.root)
    assert restored is not None
    assert list(other.cached) == wc.plan().ids == restored.ids
    assert restored.segments == wc.plan().segments
    assert np.abs(other.logits() - engine.logits()).max() <= 1e-3
    # Only after an edit does anything need prefilling, and only what follows it.
    wc2 = WorkspaceCache(wc.ws, other, template_for(other), cfg)
    wc2.seed_tokens(restored.ids, restored.segments)
    assert wc2.sync() == 0


def corrupt_kv(d: Path) -> None:
    kv = d / "kv.bin"
    data = bytearray(kv.read_bytes())
    data[len(data) // 2] ^= 0xFF
    kv.write_bytes(bytes(data))


def truncate_kv(d: Path) -> None:
    kv = d / "kv.bin"
    kv.write_bytes(kv.read_bytes()[: kv.stat().st_size // 2])


def garbage_meta(d: Path) -> None:
    (d / "meta.msgpack").write_bytes(b"\x93\x01garbage")


@pytest.mark.parametrize("damage", [corrupt_kv, truncate_kv, garbage_meta])
def test_damaged_snapshot_is_discarded(
    tmp_path: Path,
    cfg: Config,
    engine: LlamaCppEngine,
    damage,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    wc = warmed(tmp_path, cfg, engine)
    d = snapshot.save(engine, wc.ws.root, wc.plan().segments)
    damage(d)
    assert snapshot.load(engine, wc.ws.root) is None
    assert list(engine.cached) == []
    assert not d.exists()
    assert "discarding snapshot" in caplog.text


def test_snapshot_of_another_model_is_discarded(
    tmp_path: Path, cfg: Config, engine: LlamaCppEngine, other_tiny_model: Path
) -> None:
    wc = warmed(tmp_path, cfg, engine)
    snapshot.save(engine, wc.ws.root, wc.plan().segments)
    other = LlamaCppEngine(other_tiny_model, n_ctx=cfg.n_ctx, n_threads=1)
    assert snapshot.load(other, wc.ws.root) is None
    assert list(other.cached) == []


def test_full_disk_keeps_the_old_snapshot(tmp_path: Path, cfg: Config, engine: LlamaCppEngine) -> None:
    wc = warmed(tmp_path, cfg, engine)
    d = snapshot.save(engine, wc.ws.root, wc.plan().segments)
    before = (d / "meta.msgpack").read_bytes()
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    os.symlink("/dev/full", d / "meta.msgpack.tmp")  # every write to it fails with ENOSPC
    with pytest.raises(OSError):
        snapshot.save(engine, wc.ws.root, wc.plan().segments)
    assert (d / "meta.msgpack").read_bytes() == before
    assert snapshot.load(engine, wc.ws.root) is not None


def test_daemon_restart_reuses_the_snapshot(daemon: DaemonProc, tmp_path: Path) -> None:
    root = make_files(tmp_path / "ws", FILES)
    with daemon.client() as c:
        cold = c.call("warm", {"root": str(root)})
    assert cold["prefilled_tokens"] == cold["tokens"]
    daemon.stop()
    assert "snapshot of" in daemon.log()
    daemon.start()
    with daemon.client() as c:
        warm = c.call("warm", {"root": str(root)})
        st = c.call("status")
    assert warm["tokens"] == cold["tokens"]
    assert warm["prefilled_tokens"] == 0  # restored, not recomputed
    assert "restored" in daemon.log()
    assert st["cached_tokens"] >= warm["tokens"]
    # An edit to the hottest file after the restart re-prefills that file alone.
    hot = max(root.rglob("*.py"), key=lambda p: (p.stat().st_mtime_ns, p.relative_to(root).as_posix()))
    hot.write_text(hot.read_text() + "# edited\n")
    with daemon.client() as c:
        again = c.call("warm", {"root": str(root)})
    assert 0 < again["prefilled_tokens"] <= len(hot.read_text()) + 16  # byte-level vocab: ~1 token a byte
