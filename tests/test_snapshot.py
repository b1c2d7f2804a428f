"""Snapshots: a restart answers from a warm cache; a bad snapshot is discarded, never a crash."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import numpy as np
import pytest
from banked.daemon.config import Config
from banked.daemon.context.cursor import Cursor
from banked.daemon.context.templates import template_for
from banked.daemon.context.workspace import Workspace
from banked.daemon.context.wscache import WorkspaceCache
from banked.daemon.engines.llamacpp import LlamaCppEngine
from banked.daemon.serving import snapshot
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
    d = snapshot.save(engine, wc.ws.root, wc.plan().ids)
    assert d is not None and kv_file(d).stat().st_size > 0
    other = LlamaCppEngine(tiny_model, n_ctx=cfg.n_ctx, n_threads=1)
    restored = snapshot.load(other, wc.ws.root)
    assert list(other.cached) == wc.plan().ids == restored
    assert np.abs(other.logits() - engine.logits()).max() <= 1e-3
    # Only after an edit does anything need prefilling, and only what follows it.
    wc2 = WorkspaceCache(wc.ws, other, template_for(other), cfg)
    assert wc2.sync() == 0


def kv_file(d: Path) -> Path:
    return d / msgpack.unpackb((d / "meta.msgpack").read_bytes())["kv"]


def test_a_snapshot_taken_mid_sync_is_a_shorter_prefix_not_a_mismatch(
    tmp_path: Path, cfg: Config, engine: LlamaCppEngine, tiny_model: Path
) -> None:
    """`banked stop` while warming: what is saved is the part prefilled so far, and the restart goes on from it."""
    ws = Workspace(make_files(tmp_path / "ws", FILES))
    ws.scan()
    wc = WorkspaceCache(ws, engine, template_for(engine), cfg)
    chunks = iter(range(100))
    wc.sync(lambda: next(chunks) >= 3)  # interrupted after a few chunks
    plan = wc.plan().ids
    part = len(engine.cached)
    assert 0 < part < len(plan)
    snapshot.save(engine, ws.root, plan)
    other = LlamaCppEngine(tiny_model, n_ctx=cfg.n_ctx, n_threads=1, chunk=cfg.prefill_chunk)
    assert snapshot.load(other, ws.root) == plan[:part]
    wc2 = WorkspaceCache(Workspace(ws.root), other, template_for(other), cfg)
    wc2.ws.scan()
    assert wc2.sync() == len(plan) - part  # the rest, and only the rest
    assert wc2.plan().ids == plan
    fresh = LlamaCppEngine(tiny_model, n_ctx=cfg.n_ctx, n_threads=1)
    fresh.prefill(plan)
    assert np.abs(other.logits() - fresh.logits()).max() <= 1e-3


def test_the_tail_never_reaches_the_disk(tmp_path: Path, cfg: Config, engine: LlamaCppEngine) -> None:
    """A completion's tail (here the text of an unsaved buffer) stays in the cache but not in the snapshot."""
    wc = warmed(tmp_path, cfg, engine)
    plan = wc.plan().ids
    d = snapshot.save(engine, wc.ws.root, plan)
    assert d is not None
    without_tail = kv_file(d).stat().st_size
    tail = wc.fim_tail("notes.py", Cursor.at("PASSWORD = 'correct horse battery staple'\n", 1, 0))
    engine.prefill(tail)
    snapshot.save(engine, wc.ws.root, plan)
    meta = msgpack.unpackb((d / "meta.msgpack").read_bytes())
    assert meta["ids"] == plan
    assert kv_file(d).stat().st_size == without_tail
    assert list(engine.cached) == plan  # cut to the plan before writing


def test_forged_token_ids_are_refused(tmp_path: Path, cfg: Config, engine: LlamaCppEngine) -> None:
    """meta.msgpack's ids must be the ones the cache file holds: a hand-edited meta is discarded."""
    wc = warmed(tmp_path, cfg, engine)
    d = snapshot.save(engine, wc.ws.root, wc.plan().ids)
    assert d is not None
    meta = msgpack.unpackb((d / "meta.msgpack").read_bytes())
    meta["ids"] = meta["ids"][:5] + meta["ids"][6:] + [meta["ids"][5]]  # shifted, same length
    (d / "meta.msgpack").write_bytes(msgpack.packb(meta))
    assert snapshot.load(engine, wc.ws.root) is None
    assert list(engine.cached) == []


def test_leftovers_of_an_interrupted_save_are_swept(tmp_path: Path, cfg: Config, engine: LlamaCppEngine) -> None:
    wc = warmed(tmp_path, cfg, engine)
    d = snapshot.save(engine, wc.ws.root, wc.plan().ids)
    assert d is not None
    live = kv_file(d)
    (d / "kv-1.bin.tmp").write_bytes(b"half")
    (d / "meta.msgpack.tmp").write_bytes(b"half")
    (d / "kv-2.bin").write_bytes(live.read_bytes())  # renamed, but meta never pointed at it
    assert snapshot.load(engine, wc.ws.root) == wc.plan().ids
    assert sorted(p.name for p in d.iterdir()) == sorted([live.name, "meta.msgpack"])


def corrupt_kv(d: Path) -> None:
    kv = kv_file(d)
    data = bytearray(kv.read_bytes())
    data[len(data) // 2] ^= 0xFF
    kv.write_bytes(bytes(data))


def truncate_kv(d: Path) -> None:
    kv = kv_file(d)
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
    d = snapshot.save(engine, wc.ws.root, wc.plan().ids)
    damage(d)
    assert snapshot.load(engine, wc.ws.root) is None
    assert list(engine.cached) == []
    assert not d.exists()
    assert "discarding snapshot" in caplog.text


def test_snapshot_of_another_model_is_discarded(
    tmp_path: Path, cfg: Config, engine: LlamaCppEngine, other_tiny_model: Path
) -> None:
    wc = warmed(tmp_path, cfg, engine)
    snapshot.save(engine, wc.ws.root, wc.plan().ids)
    other = LlamaCppEngine(other_tiny_model, n_ctx=cfg.n_ctx, n_threads=1)
    assert snapshot.load(other, wc.ws.root) is None
    assert list(other.cached) == []


def test_full_disk_keeps_the_old_snapshot(tmp_path: Path, cfg: Config, engine: LlamaCppEngine) -> None:
    wc = warmed(tmp_path, cfg, engine)
    d = snapshot.save(engine, wc.ws.root, wc.plan().ids)
    before = (d / "meta.msgpack").read_bytes()
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    os.symlink("/dev/full", d / "meta.msgpack.tmp")  # every write to it fails with ENOSPC
    with pytest.raises(OSError):
        snapshot.save(engine, wc.ws.root, wc.plan().ids)
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
