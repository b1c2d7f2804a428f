"""The focus segment: the definitions the cursor needs, right before the completion's FIM tail.

The workspace prefix holds whole files, but they are far from the cursor (tens
of thousands of tokens back), and a small model uses what is near. So the
definitions the code at the cursor is about to use are repeated just before the
FIM tail, as short excerpts of their files: signatures, docstrings, and small
bodies whole. Which definitions: the names the current file imports from other
workspace files (a name imported and not yet used is the likeliest next one),
and the names used around the cursor that other workspace files define.
Everything is banked's own parse and import graph (syntax.py, repomap.py): no
editor help.

The segment depends on the lines around the cursor only in blocks of
`WINDOW_ALIGN` lines, and on the file as the workspace prefix holds it (saved,
or folded in at idle), never on the text being typed: typing costs nothing
extra, it changes when the names in the saved file or the block change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from banked.daemon.context import repomap, syntax
from banked.daemon.context.cursor import Cursor

WINDOW_BEFORE = 40  # lines above the cursor whose names count
WINDOW_AFTER = 10
WINDOW_ALIGN = 20
SMALL_BODY_LINES = 12  # a definition this short is shown whole
_IDENT = re.compile(r"[A-Za-z_]\w*")
_COMMON = {
    "self", "cls", "None", "True", "False", "return", "def", "class", "import", "from", "if", "else", "elif",
    "for", "while", "in", "not", "and", "or", "is", "with", "as", "try", "except", "finally", "raise", "pass",
    "lambda", "yield", "await", "async", "get", "set", "run", "main", "name", "value", "data", "args",
    "kwargs", "init", "__init__", "result", "type", "str", "int", "list", "dict", "len", "print",
}  # fmt: skip


@dataclass(frozen=True)
class Wanted:
    """A definition the focus segment may show, and how much it matters (higher first)."""

    path: str
    symbol: syntax.Symbol
    score: float


def imported_names(p: syntax.Parsed) -> list[tuple[str, str]]:
    """(module spec, name) for each name a Python file imports by name (`from m import a, b as c`)."""
    out: list[tuple[str, str]] = []
    if p.language != "python":
        return out
    for n, _ in syntax.walk(p.tree.root_node, {"import_from_statement"}):
        mod = n.child_by_field_name("module_name")
        if mod is None:
            continue
        spec = syntax.node_text(p, mod)
        for c in n.children_by_field_name("name"):
            target = c.child_by_field_name("name") if c.type == "aliased_import" else c
            if target is not None:
                out.append((spec, syntax.node_text(p, target)))
    return out


def names_near(lines: Sequence[str], line: int, skip: int | None = None) -> dict[str, int]:
    """Identifiers on the lines around `line` (never line `skip`), with their distance in lines from the middle
    of `line`'s block.

    Window and distances are aligned to WINDOW_ALIGN lines, so they stay put while the user moves a little."""
    block = (line // WINDOW_ALIGN) * WINDOW_ALIGN
    start = max(0, block - WINDOW_BEFORE)
    end = min(len(lines), block + WINDOW_AFTER + WINDOW_ALIGN)
    middle = block + WINDOW_ALIGN // 2
    near: dict[str, int] = {}
    for i in range(start, end):
        if i == skip:
            continue
        for name in _IDENT.findall(lines[i]):
            if name not in _COMMON and len(name) > 2:
                near[name] = min(near.get(name, 1 << 30), abs(i - middle))
    return near


def wanted(
    rel: str,
    parsed: syntax.Parsed | None,
    cursor: Cursor,
    infos: Mapping[str, repomap.FileInfo],
    saved: str | None = None,
) -> list[Wanted]:
    """The definitions in other workspace files the code at the cursor may need, most relevant first.

    With `saved` (the file's copy in the workspace prefix), the names near the cursor are read there, not in
    the buffer: what the user is typing now changes the segment only once it is saved or folded into the
    prefix (the prefix re-prefills then anyway), never at each new line. Re-prefilling a changed segment
    costs the whole tail after it: 20 s at 16k tokens deep on 2 CPU cores (bench/typing.py)."""
    own = {s.name for s in infos[rel].symbols} if rel in infos else set()
    by_name = _definitions(infos, rel)
    imported, deps = _imports(rel, parsed, set(infos))
    near = (
        names_near(saved.split("\n"), cursor.line)
        if saved is not None
        else names_near(cursor.lines, cursor.line, cursor.line)
    )
    scores: dict[tuple[str, int], Wanted] = {}

    def add(path: str, sym: syntax.Symbol, score: float) -> None:
        key = (path, sym.start_line)
        if key not in scores or scores[key].score < score:
            scores[key] = Wanted(path, sym, score)

    for name, files in imported.items():
        for path, sym in by_name.get(name, []):
            if path in files and name not in own:
                # Imported and used nearby ranks first; imported and unused (about to be used) next.
                add(path, sym, 3.0 + (2.0 / (1 + near[name]) if name in near else 0.0))
    for name, distance in near.items():
        for path, sym in by_name.get(name, []) if name not in own else []:
            add(path, sym, (2.0 if path in deps else 1.0) + 1.0 / (1 + distance))
    return sorted(scores.values(), key=lambda w: (-w.score, w.path, w.symbol.start_line))


def _definitions(infos: Mapping[str, repomap.FileInfo], rel: str) -> dict[str, list[tuple[str, syntax.Symbol]]]:
    """Every definition of the other files, by name."""
    by_name: dict[str, list[tuple[str, syntax.Symbol]]] = {}
    for path, info in infos.items():
        if path != rel:
            for s in info.symbols:
                by_name.setdefault(s.name, []).append((path, s))
    return by_name


def _imports(rel: str, parsed: syntax.Parsed | None, paths: set[str]) -> tuple[dict[str, list[str]], set[str]]:
    """The names the file imports by name, each with the workspace files it comes from; and every workspace
    file the file imports."""
    if parsed is None:
        return {}, set()
    names = imported_names(parsed)
    imported = {name: repomap.resolve(rel, spec, paths) for spec, name in names}
    deps = {f for files in imported.values() for f in files}
    deps |= {f for spec in syntax.imports(parsed) for f in repomap.resolve(rel, spec, paths)}
    # `from . import hooks`: the name is a module, whose definitions are what `hooks.x` will use.
    deps |= {
        f
        for spec, name in names
        for f in repomap.resolve(rel, spec + ("" if spec.endswith(".") else ".") + name, paths)
    }
    return imported, deps


def excerpt(text: str, sym: syntax.Symbol, symbols: tuple[syntax.Symbol, ...]) -> str:
    """A definition as the model should see it: whole when small, else its head, docstring and, for a class,
    its methods' signatures."""
    lines = text.split("\n")
    body = lines[sym.start_line : sym.end_line + 1]
    if len(body) <= SMALL_BODY_LINES:
        return "\n".join(body)
    head = [ln for ln in body[:4] if ln.strip()][:2]
    indent = " " * (len(body[0]) - len(body[0].lstrip()) + 4)
    out = [*head[:1]]
    doc = _docstring(body[1:])
    if doc:
        out += doc
    if sym.kind in ("class_definition", "class_declaration") or "class" in sym.signature.split(" ")[:2]:
        inner = [s for s in symbols if sym.start_line < s.start_line <= sym.end_line]
        out += [f"{indent}{s.signature}: ..." for s in inner]
    if len(out) == 1:
        out.append(f"{indent}...")
    return "\n".join(out)


def _docstring(lines: list[str]) -> list[str]:
    """The docstring opening these lines, up to 6 lines of it."""
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None or not lines[first].lstrip().startswith(('"""', "'''")):
        return []
    quote = lines[first].lstrip()[:3]
    for j in range(first, min(len(lines), first + 6)):
        if quote in lines[j].lstrip()[3 if j == first else 0 :]:
            return lines[first : j + 1]
    return [*lines[first : first + 5], lines[first][: len(lines[first]) - len(lines[first].lstrip())] + quote]


def render(
    chosen: list[Wanted], texts: Mapping[str, str], infos: Mapping[str, repomap.FileInfo]
) -> list[tuple[str, str]]:
    """(path, excerpts) per file, least relevant file first (so the most relevant sits nearest the cursor);
    within a file, in source order."""
    files: dict[str, list[Wanted]] = {}
    best: dict[str, float] = {}
    for w in chosen:
        files.setdefault(w.path, []).append(w)
        best[w.path] = max(best.get(w.path, 0.0), w.score)
    out = []
    for path in sorted(files, key=lambda p: (best[p], p)):
        parts = sorted(files[path], key=lambda w: w.symbol.start_line)
        kept = [w for w in parts if not any(o is not w and _inside(w.symbol, o.symbol) for o in parts)]
        out.append((path, "\n\n".join(excerpt(texts[path], w.symbol, infos[path].symbols) for w in kept)))
    return out


def _inside(inner: syntax.Symbol, outer: syntax.Symbol) -> bool:
    return outer.start_line <= inner.start_line and inner.end_line <= outer.end_line and inner != outer
