"""Which files of a workspace the model may see, and their contents.

Rules, in order: never leave the root (symlinks are resolved and checked);
skip version-control dirs, dependencies, build output and secrets (by name and
by content, see secrets.py) by default; honour `.gitignore` and `.bankedignore`
files at every level; skip special files (FIFOs, devices, sockets: never
opened for reading), binary (NUL bytes), non-UTF-8 and oversized files. A file
that vanishes while we read it is simply absent.

Reading and applying are two steps: `read_changes` touches the disk and never
the tables, `apply` updates the tables and never the disk. The daemon runs the
first outside its workspace lock and the second inside it, so a slow disk, a
huge tree or a stuck special file never holds the lock.
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
from banked.daemon.context import secrets

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
IGNORE_FILES = (".gitignore", ".bankedignore")
_SNIFF = 8192


@dataclass(frozen=True)
class FileState:
    path: str  # relative, '/'-separated
    text: str
    mtime_ns: int
    digest: str
    stat_key: tuple[int, ...] = ()  # (mtime, ctime, size, inode): unchanged key, unchanged file


@dataclass
class Changes:
    """What `read_changes` found: new states (None: gone or refused) and why files were skipped."""

    states: dict[str, FileState | None] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    full: bool = False  # a whole scan: known files it did not walk past are gone
    walked: set[str] = field(default_factory=set)


@dataclass
class Rules:
    max_file_bytes: int = 512 * 1024
    extra_excludes: list[str] = field(default_factory=list)
    include_secrets: bool = False
    max_files: int = 20000  # a walk stops here: pointing banked at a huge tree must not hang it
    extra_secrets: list[str] = field(default_factory=list)

    def base_spec(self) -> pathspec.GitIgnoreSpec:
        patterns = DEFAULT_EXCLUDES + self.extra_excludes
        if not self.include_secrets:
            patterns = patterns + self.secret_patterns()
        return pathspec.GitIgnoreSpec.from_lines(patterns)

    def secret_patterns(self) -> list[str]:
        return secrets.SECRET_PATTERNS + self.extra_secrets


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


class Unreadable(Exception):
    """A file the model must not or cannot see; the message says why (as in `skipped`)."""


class Workspace:
    """The files of one root as they are on disk (overlays live in the cache manager)."""

    def __init__(self, root: Path, rules: Rules | None = None):
        self.root = root.resolve()
        self.rules = rules or Rules()
        self._base = self.rules.base_spec()
        self._secret = pathspec.GitIgnoreSpec.from_lines(self.rules.secret_patterns())
        self._ignores: dict[str, pathspec.GitIgnoreSpec | None] = {}
        self.files: dict[str, FileState] = {}
        self.skipped: dict[str, str] = {}  # path -> why, for status and tests
        self.truncated = False  # the last walk stopped at max_files

    # -- rules ---------------------------------------------------------------------------

    def _ignore_spec(self, rel_dir: str) -> pathspec.GitIgnoreSpec | None:
        if rel_dir not in self._ignores:
            lines: list[str] = []
            for name in IGNORE_FILES:
                p = self.root / rel_dir / name
                try:
                    if p.is_file() and self.contains(p):
                        lines += p.read_text(encoding="utf-8", errors="replace").splitlines()
                except OSError:
                    continue
            self._ignores[rel_dir] = pathspec.GitIgnoreSpec.from_lines(lines) if lines else None
        return self._ignores[rel_dir]

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        """True if `rel` is excluded by the defaults, secrets or any .gitignore/.bankedignore above it."""
        probe = rel + "/" if is_dir else rel
        if self._base.match_file(probe):
            return True
        parts = rel.split("/")
        for i in range(len(parts)):
            d = "/".join(parts[:i])
            spec = self._ignore_spec(d)
            if spec is not None:
                sub = "/".join(parts[i:]) + ("/" if is_dir else "")
                if spec.match_file(sub):
                    return True
            if i < len(parts) - 1 and self._base.match_file("/".join(parts[: i + 1]) + "/"):
                return True
        return False

    def is_secret(self, rel: str) -> bool:
        """A file the deny list names (whatever `include_secrets` says: completions never run in one)."""
        parts = rel.split("/")
        dirs = ("/".join(parts[: i + 1]) + "/" for i in range(len(parts) - 1))
        return self._secret.match_file(rel) or any(self._secret.match_file(d) for d in dirs)

    def contains(self, path: Path) -> bool:
        """True if `path`, with every symlink resolved, lies inside the root."""
        real = os.path.realpath(path)
        root = str(self.root)
        return real == root or real.startswith(root if root.endswith(os.sep) else root + os.sep)

    def relative(self, path: Path) -> str | None:
        """`path` relative to the root ('/'-separated), or None if it lies outside."""
        try:
            return Path(os.path.abspath(path)).relative_to(self.root).as_posix()
        except ValueError:
            return None

    # -- reading (disk only; never the tables) -------------------------------------------

    def load(self, rel: str, max_bytes: int) -> tuple[str, tuple[int, ...]]:
        """The text of a file under the root, read safely; raises Unreadable with the reason.

        Opened non-blocking and checked with fstat before any read, so a FIFO or a device never
        blocks; the real path must lie inside the root.
        """
        full = self.root / rel
        if not self.contains(full):
            raise Unreadable("symlink outside the workspace")
        try:
            fd = os.open(os.path.realpath(full), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise Unreadable(f"unreadable: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise Unreadable("a directory")
            if not stat.S_ISREG(st.st_mode):
                raise Unreadable("not a regular file")
            if st.st_size > max_bytes:
                raise Unreadable(f"larger than {max_bytes} bytes")
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise Unreadable(f"larger than {max_bytes} bytes")
        if b"\0" in data[:_SNIFF] or b"\0" in data:
            raise Unreadable("binary")
        try:
            return data.decode("utf-8"), _stat_key(st)
        except UnicodeDecodeError:
            raise Unreadable("not UTF-8") from None

    def read(self, rel: str) -> FileState | None:
        """The file's state, or None (with the reason in `skipped`) if the model must not see it."""
        ch = Changes()
        state = self._read_one(rel, ch)
        self.skipped.pop(rel, None)
        self.skipped.update(ch.skipped)
        return state

    def _read_one(self, rel: str, ch: Changes) -> FileState | None:
        if self.ignored(rel):
            ch.skipped[rel] = "excluded"
            return None
        try:
            text, key = self.load(rel, self.rules.max_file_bytes)
        except FileNotFoundError:
            return None
        except Unreadable as exc:
            ch.skipped[rel] = str(exc)
            return None
        if not self.rules.include_secrets:
            found = secrets.find(text)
            if found:
                ch.skipped[rel] = f"contains {found}"
                return None
        return FileState(rel, text, key[0], digest(text), key)

    def walk(self) -> list[str]:
        """Relative paths of candidate files; directory symlinks are never followed."""
        out: list[str] = []
        stack = [""]
        self.truncated = False
        while stack:
            if len(out) >= self.rules.max_files:
                log.warning("%s: more than %d files; the rest are not scanned", self.root, self.rules.max_files)
                self.truncated = True
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
                        if not self.ignored(rel):
                            out.append(rel)
                    elif e.is_file(follow_symlinks=False) and not self.ignored(rel):
                        out.append(rel)
                except OSError:
                    continue
        return out

    def read_changes(self, rels: Iterable[str] | None = None) -> Changes:
        """Read what changed on disk: the whole tree (None), or the given paths (watcher events).

        A whole scan skips files whose (mtime, ctime, size, inode) are unchanged: `cp -p` and other
        mtime-preserving writes still change ctime. Given paths are always re-read and compared by
        content.
        """
        ch = Changes(full=rels is None)
        if rels is None:
            self._ignores.clear()
            ch.walked = set(self.walk())
            for rel in sorted(ch.walked):
                old = self.files.get(rel)
                if old is not None and self._unchanged(rel, old):
                    continue
                ch.states[rel] = self._read_one(rel, ch)
            return ch
        rels = set(rels)
        if any(r.rsplit("/", 1)[-1] in IGNORE_FILES for r in rels):
            self._ignores.clear()
        for rel in rels:
            full = self.root / rel
            state = None
            if os.path.lexists(full) and not os.path.isdir(full):
                state = self._read_one(rel, ch)
            ch.states[rel] = state
        return ch

    def _unchanged(self, rel: str, old: FileState) -> bool:
        try:
            return _stat_key(os.stat(self.root / rel)) == old.stat_key and self.contains(self.root / rel)
        except OSError:
            return False

    # -- applying (tables only; never the disk) ------------------------------------------

    def apply(self, ch: Changes) -> set[str]:
        """Update the tables from `read_changes`; returns the paths whose content or presence changed."""
        changed: set[str] = set()
        if ch.full:
            for rel in [r for r in self.files if r not in ch.walked]:
                del self.files[rel]
                changed.add(rel)
            self.skipped = {}
        for rel, new in ch.states.items():
            self.skipped.pop(rel, None)
            old = self.files.get(rel)
            if new is None:
                if self.files.pop(rel, None) is not None:
                    changed.add(rel)
            elif old is None or old.digest != new.digest:
                self.files[rel] = new
                changed.add(rel)
            else:
                self.files[rel] = new  # same text, newer stat: keep the key current
        self.skipped.update(ch.skipped)
        return changed

    def scan(self) -> set[str]:
        """Re-read the whole tree and apply it (single-threaded callers: tests, benches)."""
        return self.apply(self.read_changes())

    def refresh(self, rels: Iterable[str]) -> set[str]:
        """Re-read some paths and apply them (single-threaded callers)."""
        return self.apply(self.read_changes(rels))
