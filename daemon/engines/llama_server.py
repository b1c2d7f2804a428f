"""llama.cpp's `llama-server`, built from the same pinned sources as the daemon's own llama.cpp engine.

The remote engine talks to any `llama-server`; `banked team-server` starts one, and the tests run against a
real one. Both need the binary, and PyPI has none that is MIT and pinned, so it is built once from the
llama.cpp that the pinned llama-cpp-python sdist vendors: the server then tokenizes and computes exactly as
the daemon's local engine does. The sdist is checked against its sha256; the binary is kept in a build cache
outside any checkout (as pip keeps built wheels), so a fresh clone does not build it again.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import platformdirs

#: The llama-cpp-python release whose vendored llama.cpp is built (pyproject.toml pins the same one).
VERSION = "0.3.36"
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
SDIST_URL = f"https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/{SDIST}"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
BINARY = "llama-server"
CMAKE_OPTIONS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",  # no web UI: npm at build time, and banked needs only the API
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # nor a download of one
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=ON",
]

Say = Callable[[str], None]


class BuildError(RuntimeError):
    """The server could not be built; the message says what to install or where the log is."""


def build_dir() -> Path:
    """Where built servers are kept: the user's cache, outside banked's own dirs and any checkout."""
    base = os.environ.get("BANKED_BUILD_CACHE") or platformdirs.user_cache_dir("banked-build")
    key = hashlib.sha256(f"{VERSION}|{platform.machine()}|{' '.join(CMAKE_OPTIONS)}".encode()).hexdigest()[:12]
    return Path(base) / f"llama-server-{VERSION}-{key}"


def find() -> Path | None:
    """The `llama-server` to use: $BANKED_LLAMA_SERVER, the one beside this Python (`make install-server`
    puts it in .venv/bin), the build cache, then PATH."""
    named = os.environ.get("BANKED_LLAMA_SERVER")
    if named:
        return Path(named) if Path(named).is_file() else None
    for candidate in (Path(sys.executable).parent / BINARY, build_dir() / BINARY):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(BINARY)
    return Path(found) if found else None


def build(say: Say = lambda _m: None, jobs: int = 0, install: bool = True) -> Path:
    """Build `llama-server` (minutes on a laptop: about 15 on 2 cores) unless the build cache has it; with
    `install`, also link it beside this Python. Returns the binary."""
    out = build_dir() / BINARY
    if not out.is_file():
        for tool in ("cmake", "c++"):
            if shutil.which(tool) is None:
                raise BuildError(f"building llama-server needs {tool}: install it (e.g. `apt install cmake g++`)")
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="banked-llama-server-") as tmp:
            src = _sources(Path(tmp), say)
            log = out.parent / "build.log"
            say(f"building llama-server from llama-cpp-python {VERSION}'s llama.cpp (log: {log})")
            with log.open("w") as f:
                n = str(jobs or os.cpu_count() or 2)
                for cmd in (
                    ["cmake", "-S", str(src), "-B", str(src / "build"), *CMAKE_OPTIONS],
                    ["cmake", "--build", str(src / "build"), "--target", BINARY, "-j", n],
                ):
                    if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False).returncode:
                        raise BuildError(f"building llama-server failed; see {log}")
            built = src / "build" / "bin" / BINARY
            tmp_out = out.with_suffix(".tmp")
            shutil.copy2(built, tmp_out)
            os.replace(tmp_out, out)  # whole or not at all: a killed build leaves no half binary
    if install:
        beside = Path(sys.executable).parent / BINARY
        if not beside.exists():
            beside.symlink_to(out)
    return out


def _sources(tmp: Path, say: Say) -> Path:
    """The pinned sdist (downloaded once into the build cache, its sha256 checked), unpacked: llama.cpp's dir."""
    sdist = build_dir().parent / SDIST
    sdist.parent.mkdir(parents=True, exist_ok=True)
    if not sdist.is_file() or _sha256(sdist) != SDIST_SHA256:
        say(f"downloading {SDIST} from PyPI")
        part = sdist.with_suffix(".part")
        with urllib.request.urlopen(SDIST_URL, timeout=300) as r, part.open("wb") as f:  # pinned https URL
            shutil.copyfileobj(r, f)
        if _sha256(part) != SDIST_SHA256:
            part.unlink(missing_ok=True)
            raise BuildError(f"{SDIST} from PyPI does not match its pinned sha256; not building from it")
        os.replace(part, sdist)
    prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
    with tarfile.open(sdist) as t:
        members = [m for m in t.getmembers() if m.name.startswith(prefix)]
        t.extractall(tmp, members=members, filter="data")
    return tmp / prefix


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    """`python -m banked.daemon.engines.llama_server`: build it (the Makefile's `install-server`)."""
    path = build(say=lambda m: print(m, flush=True))
    print(path)


if __name__ == "__main__":
    main()
