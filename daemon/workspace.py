"""Which files of a workspace the model may see, and their contents.

Rules, in order: never leave the root (symlinks are resolved and checked);
skip version-control dirs, dependencies, build output and secrets by default;
honour `.gitignore` files at every level; skip binary (NUL bytes), non-UTF-8
and oversized files. A file that vanishes while we read it is simply absent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

log = logging.getLogger(__name__)

DEFAULT_EXCLUDES = [
    ".git/",
    ".hg/",
    ".svn/",
    ".jj/",
    "node_modules/",
    ".venv/",
    "venv/",
    "__pycache__/",
    ".tox/",
    ".nox/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    "*.egg-info/",
    "build/",
    "dist/",
    "target/",
    "out/",
    ".next/",
    ".gradle/",
    ".idea/",
    ".vscode/",
    ".DS_Store",
    "package-lock.json",
    "*.min.js",
    "*.map",
    "*.pyc",
    "*.lock",
]
SECRET_PATTERNS = [
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.p12",
    "*.pfx",
    ".netrc",
    ".pgpass",
    "credentials.json",
]
_SNIFF = 8192


@dataclass(frozen=True)
class FileState:
    path: str  # relative, '/'-separated
    text: str
    mtime_ns: int
    digest: str


@dataclass
class Rules:
    max_file_bytes: int = 512 * 1024
    extra_excludes: list[str] = field(default_factory=list)
    include_secrets: bool = False
    max_files: int = 20000  # a walk stops here: pointing banked at $HOME or / must not hang it

    def base_spec(self) -> pathspec.GitIgnoreSpec:
        patterns = DEFAULT_EXCLUDES + self.extra_excludes
        if not self.include_secrets:
            patterns = patterns + SECRET_PATTERNS
        return pathspec.GitIgnoreSpec.from_lines(patterns)


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class Workspace:
    """The files of one root as they are on disk (overlays live in the cache manager)."""

    def __init__(self, root: Path, rules: Rules | None = None):
        self.root = root.resolve()
        self.rules = rules or Rules()
        self._base = self.rules.base_spec()
        self._ignores: dict[str, pathspec.GitIgnoreSpec | None] = {}
        self.files: dict[str, FileState] = {}
        self.skipped: dict[str, str] = {}  # path -> why, for status and tests

    # -- rules ---------------------------------------------------------------------------

    def _gitignore(self, rel_dir: str) -> pathspec.GitIgnoreSpec | None:
        if rel_dir not in self._ignores:
            spec = None
            p = self.root / rel_dir / ".gitignore"
            try:
                if p.is_file() and self.contains(p):
                    spec = pathspec.GitIgnoreSpec.from_lines(
                        p.read_text(encoding="utf-8", errors="replace").splitlines()
                    )
            except OSError:
                spec = None
            self._ignores[rel_dir] = spec
        return self._ignores[rel_dir]

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        """True if `rel` is excluded by the defaults, secrets or any .gitignore above it."""
        probe = rel + "/" if is_dir else rel
        if self._base.match_file(probe):
            return True
        parts = rel.split("/")
        for i in range(len(parts)):
            d = "/".join(parts[:i])
            spec = self._gitignore(d)
            if spec is not None:
                sub = "/".join(parts[i:]) + ("/" if is_dir else "")
                if spec.match_file(sub):
                    return True
            if i < len(parts) - 1 and self._base.match_file("/".join(parts[: i + 1]) + "/"):
                return True
        return False

    def contains(self, path: Path) -> bool:
        """True if `path`, with every symlink resolved, lies inside the root."""
        real = os.path.realpath(path)
        return real == str(self.root) or real.startswith(str(self.root) + os.sep)

    def relative(self, path: Path) -> str | None:
        """`path` relative to the root ('/'-separated), or None if it lies outside."""
        try:
            return Path(os.path.abspath(path)).relative_to(self.root).as_posix()
        except ValueError:
            return None

    # -- reading -------------------------------------------------------------------------

    def read(self, rel: str) -> FileState | None:
        """The file's state, or None (with the reason in `skipped`) if the model must not see it."""
        full = self.root / rel
        self.skipped.pop(rel, None)
        if self.ignored(rel):
            self._skip(rel, "excluded")
            return None
        if not self.contains(full):
            self._skip(rel, "symlink outside the workspace")
            return None
        try:
            fd = os.open(os.path.realpath(full), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._skip(rel, f"unreadable: {exc.strerror}")
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                self._skip(rel, "not a regular file")
                return None
            if st.st_size > self.rules.max_file_bytes:
                self._skip(rel, f"larger than {self.rules.max_file_bytes} bytes")
                return None
            data = f.read(self.rules.max_file_bytes + 1)
        if b"\0" in data[:_SNIFF] or b"\0" in data:
            self._skip(rel, "binary")
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self._skip(rel, "not UTF-8")
            return None
        return FileState(rel, text, st.st_mtime_ns, digest(text))

    def _skip(self, rel: str, why: str) -> None:
        self.skipped[rel] = why
        log.debug("skip %s: %s", rel, why)
        return None

    # -- scanning ------------------------------------------------------------------------

    def walk(self) -> list[str]:
        """Relative paths of candidate files; directory symlinks are never followed."""
        out: list[str] = []
        stack = [""]
        while stack:
            if len(out) >= self.rules.max_files:
                log.warning("%s: more than %d files; the rest are not scanned", self.root, self.rules.max_files)
                break
            rel_dir = stack.pop()
            try:
                entries = list(os.scandir(self.root / rel_dir))
            except OSError:
                continue
            for e in sorted(entries, key=lambda e: e.name):
                rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
                try:
                    if e.is_dir(follow_symlinks=False):
                        if not self.ignored(rel, is_dir=True):
                            stack.append(rel)
                    elif e.is_symlink():
                        if os.path.isdir(e.path):
                            continue  # a directory symlink: loops and duplicates, never followed
                        if not self.contains(Path(e.path)):
                            self._skip(rel, "symlink outside the workspace")
                            continue
                        if not self.ignored(rel):
                            out.append(rel)
                    elif e.is_file(follow_symlinks=False) and not self.ignored(rel):
                        out.append(rel)
                except OSError:
                    continue
        return out

    def scan(self) -> set[str]:
        """Re-read the whole tree; returns the paths whose state changed."""
        self._ignores.clear()
        seen = set(self.walk())
        return self.refresh(seen | set(self.files))

    def refresh(self, rels: Iterable[str]) -> set[str]:
        """Re-read some paths (from watcher events); returns the ones that changed."""
        changed: set[str] = set()
        for rel in rels:
            if rel.endswith(".gitignore") or rel == ".gitignore":
                self._ignores.clear()
            old = self.files.get(rel)
            full = self.root / rel
            new = None
            if os.path.lexists(full) and not os.path.isdir(full):
                if old is not None:
                    try:
                        st = os.stat(full)
                        if st.st_mtime_ns == old.mtime_ns and self.contains(full):
                            continue
                    except OSError:
                        pass
                new = self.read(rel)
            if new is None:
                if self.files.pop(rel, None) is not None:
                    changed.add(rel)
            elif old is None or old.digest != new.digest or old.mtime_ns != new.mtime_ns:
                self.files[rel] = new
                changed.add(rel)
        return changed
