"""The packaged models: assembled from their PyPI parts, checked, never used when bad."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from banked.daemon.engines import model_store


def parts(tmp_path: Path, n: int = 3) -> list[Path]:
    out = []
    for i in range(n):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(bytes([i]) * 1000)
        out.append(p)
    return out


def test_assembles_and_checks(tmp_path: Path) -> None:
    ps = parts(tmp_path)
    whole = b"".join(p.read_bytes() for p in ps)
    seen: list[int] = []
    dest = model_store.assemble(
        ps, tmp_path / "m.gguf", len(whole), hashlib.sha256(whole).hexdigest(), lambda done, total: seen.append(done)
    )
    assert dest.read_bytes() == whole
    assert seen[-1] == len(whole)


def test_bad_digest_is_an_error_naming_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    ps = parts(tmp_path)
    dest = tmp_path / "m.gguf"
    with pytest.raises(model_store.ModelError) as e:
        model_store.assemble(ps, dest, 3000, "0" * 64)
    assert str(dest) in str(e.value) and "Reinstall" in str(e.value)
    assert not dest.exists()
    assert not list(tmp_path.glob("m.gguf*"))


def test_the_default_model_parts_are_installed() -> None:
    files = model_store.part_files()
    assert len(files) == 22
    assert sum(f.stat().st_size for f in files) == model_store.DEFAULT_MODEL_SIZE


def test_a_tampered_model_is_reassembled(
    banked_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ps = parts(tmp_path)
    whole = b"".join(p.read_bytes() for p in ps)
    m = model_store.Packaged("test", "t.gguf", len(whole), hashlib.sha256(whole).hexdigest(), "t-{n}", "0", 3, "-")
    monkeypatch.setattr(model_store, "part_files", lambda _m: ps)
    path = model_store.ensure(m)
    assert model_store.is_ready(m)
    path.write_bytes(b"tampered")  # the stamp no longer matches: re-verified, not trusted
    assert not model_store.is_ready(m)
    assert model_store.ensure(m).read_bytes() == whole


def test_packaged_models_are_chosen_by_name_and_a_missing_one_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert model_store.packaged("") is model_store.DEFAULT
    assert model_store.packaged("qwen2.5-coder-0.5b") is model_store.SMALL
    assert model_store.packaged("/models/base.gguf") is None
    missing = model_store.Packaged("absent", "a.gguf", 1, "0" * 64, "banked-absent-part{n}", "1.0", 2, "run X")
    with pytest.raises(
        model_store.ModelError, match=r"banked-absent-part1==1.0 is not installed \(model absent\); run X"
    ):
        model_store.part_files(missing)
