"""Which files matter when the workspace does not fit, and a symbol map of the rest.

When the workspace exceeds the token budget, files are ranked by a PageRank
over the import graph, personalised to the files the user works on (open,
edited, completed in), so the modules those files import, and the ones that
import them, come first; the files that still do not fit are summarised as a
compact symbol map (signatures, one line each). Aider's repo map is the model;
this one ranks files, not tags, because whole files are what the cache holds.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from banked.daemon.context import syntax

SYMBOL_MAP_PATH = "<symbol map>"  # the segment's name: never a real file's path


@dataclass(frozen=True)
class FileInfo:
    symbols: tuple[syntax.Symbol, ...]
    imports: tuple[str, ...]


class RepoMap:
    """Symbols and imports per file version, computed once each (tree-sitter)."""

    def __init__(self) -> None:
        self._info: dict[tuple[str, str], FileInfo] = {}

    def info(self, path: str, text: str, digest: str) -> FileInfo:
        key = (path, digest)
        found = self._info.get(key)
        if found is None:
            language = syntax.language_of(path)
            if language is None:
                found = FileInfo((), ())
            else:
                p = syntax.parse_text(language, text)
                found = FileInfo(tuple(syntax.symbols(p)), tuple(syntax.imports(p)))
            self._info[key] = found
        return found

    def forget_except(self, live: Iterable[tuple[str, str]]) -> None:
        keep = set(live)
        for k in [k for k in self._info if k not in keep]:
            del self._info[k]


def resolve(importer: str, spec: str, paths: set[str]) -> list[str]:
    """Workspace files an import in `importer` refers to (none for the standard library or packages)."""
    language = syntax.language_of(importer)
    here = posixpath.dirname(importer)
    candidates: list[str] = []
    if language == "python":
        dots = len(spec) - len(spec.lstrip("."))
        mod = spec.lstrip(".").replace(".", "/")
        bases = [posixpath.normpath(posixpath.join(here, *[".."] * max(dots - 1, 0)))] if dots else [""]
        for base in bases:
            stem = posixpath.join(base, mod) if mod else base
            candidates += [f"{stem}.py", f"{stem}/__init__.py"]
        if not dots:  # absolute import: match by module path anywhere (src/ layouts)
            tail = (mod + ".py", mod + "/__init__.py")
            candidates += [
                p for p in paths if p.endswith(tail) and (p in tail or p.endswith(("/" + tail[0], "/" + tail[1])))
            ]
    elif language in ("javascript", "typescript", "tsx"):
        if spec.startswith("."):
            stem = posixpath.normpath(posixpath.join(here, spec))
            exts = ("", ".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", "/index.ts", "/index.js", "/index.tsx")
            candidates += [stem + e for e in exts]
    elif language == "go":
        return sorted(
            p for p in paths if p.endswith(".go") and ("/" + posixpath.dirname(p)).endswith("/" + spec.split("/")[-1])
        )
    elif language == "rust":
        name = spec.removeprefix("mod::").removeprefix("crate::").removeprefix("self::").split("::")[0]
        candidates += [posixpath.join(here, f"{name}.rs"), posixpath.join(here, name, "mod.rs")]
        candidates += [f"src/{name}.rs", f"src/{name}/mod.rs"]
    elif language == "java":
        rel = spec.removesuffix(".*").replace(".", "/")
        candidates += [p for p in paths if p.endswith("/" + rel + ".java") or p == rel + ".java"]
    elif language in ("c", "cpp"):
        candidates += [posixpath.normpath(posixpath.join(here, spec))]
        candidates += [p for p in paths if p.endswith("/" + spec)]
    return sorted({c for c in candidates if c in paths and c != importer})


def import_graph(infos: Mapping[str, FileInfo]) -> dict[str, set[str]]:
    paths = set(infos)
    return {p: {t for spec in info.imports for t in resolve(p, spec, paths)} for p, info in infos.items()}


def rank(graph: Mapping[str, set[str]], focus: Mapping[str, float], iterations: int = 30) -> dict[str, float]:
    """Personalised PageRank: relevance flows from the focus files along imports (and, weaker, back)."""
    nodes = sorted(graph)
    if not nodes:
        return {}
    weight = {n: max(focus.get(n, 0.0), 0.0) for n in nodes}
    total = sum(weight.values())
    teleport = {n: (w / total if total else 1 / len(nodes)) for n, w in weight.items()}
    edges: dict[str, list[tuple[str, float]]] = {n: [] for n in nodes}
    for src, targets in graph.items():
        for t in targets:
            edges[src].append((t, 1.0))  # what I import matters to me
            edges[t].append((src, 0.5))  # who imports me, somewhat
    score = dict(teleport)
    for _ in range(iterations):
        nxt = {n: 0.15 * teleport[n] for n in nodes}
        for n in nodes:
            out = edges[n]
            if not out:
                for m in nodes:  # a dead end gives back to the focus
                    nxt[m] += 0.85 * score[n] * teleport[m]
                continue
            norm = sum(w for _, w in out)
            for t, w in out:
                nxt[t] += 0.85 * score[n] * w / norm
        score = nxt
    return score


def symbol_map(paths: list[str], infos: Mapping[str, FileInfo], max_chars: int) -> str:
    """Signatures of files that are not in the context, most relevant first, within `max_chars`."""
    head = "Files not shown in full (their definitions):\n"
    out: list[str] = []
    size = len(head) + len(SYMBOL_MAP_PATH) + 40  # room for the path line and a "… and N more" line
    for i, p in enumerate(paths):
        info = infos.get(p)
        names = [s.signature for s in info.symbols] if info else []
        line = f"{p}: " + ("; ".join(names) if names else "(no definitions)")
        if len(line) > 400:
            line = line[:399] + "…"
        if size + len(line) + 1 > max_chars:
            out.append(f"… and {len(paths) - i} more files")
            break
        out.append(line)
        size += len(line) + 1
    return head + "\n".join(out) + "\n" if out else ""


def focus_weights(recent: Mapping[str, int]) -> dict[str, float]:
    """The most recently worked-on file weighs most; older ones less (by rank, not by time)."""
    ordered = sorted(recent, key=lambda p: -recent[p])
    return {p: 1.0 / (1 + i) for i, p in enumerate(ordered)}
