"""Syntax trees for the daemon: what is defined where, what imports what, what encloses the cursor.

tree-sitter (grammars from tree-sitter-language-pack, bundled in its wheel: no
download at run time) parses each file once and re-parses edits incrementally
from the previous tree of the same path. A file in a language without a grammar
here is plain text: every function returns "nothing known" for it, and the
callers fall back to their language-agnostic behaviour.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from banked.daemon.context.cursor import Cursor
from tree_sitter import Node, Parser, Tree

EXTENSIONS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
}

#: Definitions worth naming in a symbol map or taking as "the code at the cursor".
DEFINITIONS = {
    "python": {"function_definition", "class_definition", "decorated_definition"},
    "javascript": {"function_declaration", "generator_function_declaration", "class_declaration", "method_definition"},
    "go": {"function_declaration", "method_declaration", "type_declaration"},
    "rust": {"function_item", "struct_item", "enum_item", "impl_item", "trait_item", "mod_item"},
    "java": {
        "class_declaration",
        "interface_declaration",
        "enum_declaration",
        "method_declaration",
        "constructor_declaration",
    },
    "c": {"function_definition", "struct_specifier"},
    "cpp": {"function_definition", "class_specifier", "struct_specifier", "namespace_definition"},
}
DEFINITIONS["typescript"] = DEFINITIONS["javascript"] | {
    "interface_declaration",
    "type_alias_declaration",
    "abstract_class_declaration",
    "enum_declaration",
}
DEFINITIONS["tsx"] = DEFINITIONS["typescript"]

IMPORTS = {
    "python": {"import_statement", "import_from_statement"},
    "javascript": {"import_statement", "export_statement"},
    "typescript": {"import_statement", "export_statement"},
    "tsx": {"import_statement", "export_statement"},
    "go": {"import_spec"},
    "rust": {"use_declaration", "mod_item"},
    "java": {"import_declaration"},
    "c": {"preproc_include"},
    "cpp": {"preproc_include"},
}

#: Nodes inside which a completion should finish the current line only.
INLINE_CONTEXTS = {
    "argument_list",
    "arguments",
    "parameters",
    "formal_parameters",
    "parameter_list",
    "type_arguments",
    "subscript",
    "string",
    "string_content",
    "template_string",
    "interpreted_string_literal",
    "string_literal",
    "comment",
    "line_comment",
    "block_comment",
}


_BLOCK_CLOSER = re.compile(r"^[\)\]\}]|^(end|fi|done|esac)\b")


def language_of(path: str) -> str | None:
    return EXTENSIONS.get(PurePosixPath(path).suffix.lower())


_parsers: dict[str, Parser] = {}
_parsers_lock = threading.Lock()


def parser_for(language: str) -> Parser:
    with _parsers_lock:
        p = _parsers.get(language)
        if p is None:
            from tree_sitter_language_pack import get_parser

            p = _parsers[language] = get_parser(language)  # type: ignore[arg-type]
        return p


@dataclass(frozen=True)
class Symbol:
    kind: str  # the node type, e.g. function_definition
    name: str
    signature: str  # the definition's head, one line, without its body
    start_line: int  # 0-based
    end_line: int  # 0-based, inclusive


@dataclass
class Parsed:
    language: str
    source: bytes
    tree: Tree

    @property
    def has_errors(self) -> bool:
        return bool(self.tree.root_node.has_error)


MAX_PARSE_BYTES = 1 << 20  # a larger buffer is treated as plain text: no tree, no cost


class ParseCache:
    """The trees of recent buffers, one per path; a changed text is parsed incrementally from that path's
    previous tree. Bounded (least recently used first out), so a day of editing does not grow it."""

    def __init__(self, max_entries: int = 32, max_bytes: int = 64 << 20) -> None:
        self._trees: OrderedDict[str, Parsed] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    def parse(self, path: str, text: str) -> Parsed | None:
        language = language_of(path)
        if language is None or len(text) > MAX_PARSE_BYTES:
            return None
        source = text.encode("utf-8", "surrogatepass")
        if len(source) > MAX_PARSE_BYTES:
            return None
        with self._lock:
            old = self._trees.get(path)
        if old is not None and old.source == source:
            with self._lock:
                if path in self._trees:
                    self._trees.move_to_end(path)
            return old
        parser = parser_for(language)
        if old is not None and old.language == language:
            old_tree = old.tree.copy()  # the cached tree may be in use by another thread: edit a copy
            _edit(old_tree, old.source, source)
            tree = parser.parse(source, old_tree)
        else:
            tree = parser.parse(source)
        parsed = Parsed(language, source, tree)
        with self._lock:
            self._trees[path] = parsed
            self._trees.move_to_end(path)
            while len(self._trees) > self.max_entries or (
                len(self._trees) > 1 and sum(len(t.source) for t in self._trees.values()) > self.max_bytes
            ):
                self._trees.popitem(last=False)
        return parsed

    def __len__(self) -> int:
        return len(self._trees)


def _point(source: bytes, offset: int) -> tuple[int, int]:
    row = source.count(b"\n", 0, offset)
    col = offset - (source.rfind(b"\n", 0, offset) + 1)
    return row, col


def _edit(tree: Tree, old: bytes, new: bytes) -> None:
    """Describe old -> new to the tree as one edit (the span between the common prefix and suffix)."""
    n = min(len(old), len(new))
    start = 0
    while start < n and old[start] == new[start]:
        start += 1
    end = 0
    while end < n - start and old[len(old) - 1 - end] == new[len(new) - 1 - end]:
        end += 1
    tree.edit(
        start_byte=start,
        old_end_byte=len(old) - end,
        new_end_byte=len(new) - end,
        start_point=_point(old, start),
        old_end_point=_point(old, len(old) - end),
        new_end_point=_point(new, len(new) - end),
    )


def parse_text(language: str, text: str) -> Parsed:
    source = text.encode("utf-8", "surrogatepass")
    return Parsed(language, source, parser_for(language).parse(source))


def node_text(p: Parsed, node: Node) -> str:
    return p.source[node.start_byte : node.end_byte].decode("utf-8", "replace")


def walk(node: Node, types: set[str]) -> Iterator[tuple[Node, Node | None]]:
    """Nodes of the given types under `node`, in source order, each with its parent (Node.parent is a
    walk from the root in tree-sitter, so it is never asked for in a loop)."""
    stack: list[tuple[Node, Node | None]] = [(node, None)]
    while stack:
        n, parent = stack.pop()
        if n.type in types:
            yield n, parent
        stack.extend((c, n) for c in reversed(n.children))


def _name(p: Parsed, node: Node) -> str:
    target = node.child_by_field_name("definition") or node
    name = target.child_by_field_name("name")
    if name is None:
        declarator = target.child_by_field_name("declarator")
        while declarator is not None and declarator.child_by_field_name("declarator") is not None:
            declarator = declarator.child_by_field_name("declarator")
        name = declarator
    if name is None and target.type == "type_declaration" and target.named_children:
        name = target.named_children[0].child_by_field_name("name")
    return node_text(p, name) if name is not None else ""


def _signature(p: Parsed, node: Node) -> str:
    target = node.child_by_field_name("definition") or node
    body = target.child_by_field_name("body")
    end = body.start_byte if body is not None else target.end_byte
    head = p.source[target.start_byte : end].decode("utf-8", "replace")
    return " ".join(head.split()).rstrip(" {:=")


def symbols(p: Parsed) -> list[Symbol]:
    """Definitions in source order (a decorated definition once, with its decorators' lines)."""
    kinds = DEFINITIONS.get(p.language, set())
    out: list[Symbol] = []
    for n, parent in walk(p.tree.root_node, kinds):
        if n.type != "decorated_definition" and parent is not None and parent.type == "decorated_definition":
            continue
        if n.type in ("struct_specifier", "class_specifier") and n.child_by_field_name("body") is None:
            continue  # a use of a struct type, not its definition
        name = _name(p, n)
        if name:
            out.append(Symbol(n.type, name, _signature(p, n), n.start_point[0], n.end_point[0]))
    return out


def _python_imports(p: Parsed, n: Node) -> list[str]:
    mod = n.child_by_field_name("module_name")
    if mod is not None:
        return [node_text(p, mod)]
    names = n.children_by_field_name("name")
    out = [node_text(p, c) for c in names if c.type == "dotted_name"]
    aliased = [c.child_by_field_name("name") for c in names if c.type == "aliased_import"]
    return out + [node_text(p, a) for a in aliased if a is not None]


def _field(name: str, strip: str = "", kind: str | None = None) -> Callable[[Parsed, Node], list[str]]:
    """An import whose module is one field of the node (`source`, `path`, `argument`)."""

    def get(p: Parsed, n: Node) -> list[str]:
        f = n.child_by_field_name(name)
        return [node_text(p, f).strip(strip)] if f is not None and (kind is None or f.type == kind) else []

    return get


def _rust_imports(p: Parsed, n: Node) -> list[str]:
    if n.type != "mod_item":
        return _field("argument")(p, n)
    name = n.child_by_field_name("name")
    return ["mod::" + node_text(p, name)] if n.child_by_field_name("body") is None and name is not None else []


def _java_imports(p: Parsed, n: Node) -> list[str]:
    return [node_text(p, n).removeprefix("import").removesuffix(";").replace("static ", "").strip()]


_IMPORTED: dict[str, Callable[[Parsed, Node], list[str]]] = {
    "python": _python_imports,
    "javascript": _field("source", "'\"`"),
    "typescript": _field("source", "'\"`"),
    "tsx": _field("source", "'\"`"),
    "go": _field("path", '"`'),
    "rust": _rust_imports,
    "java": _java_imports,
    "c": _field("path", '"', "string_literal"),
    "cpp": _field("path", '"', "string_literal"),
}


def imports(p: Parsed) -> list[str]:
    """Imported module paths as written (`a.b`, `./x`, `"fmt"`, `crate::a`, `x.h`), in source order."""
    get = _IMPORTED.get(p.language)
    if get is None:
        return []
    return [m for n, _ in walk(p.tree.root_node, IMPORTS.get(p.language, set())) for m in get(p, n)]


def ancestors_of_range(p: Parsed, start: int, end: int) -> list[Node]:
    """The nodes containing the byte range [start, end], innermost first.

    One descent from the root with a tree cursor: linear in the depth (asking each node for its
    parent instead is quadratic, and a 40 KB expression is thousands of levels deep).
    """
    cursor = p.tree.walk()
    path = [cursor.node]
    while cursor.goto_first_child_for_byte(start) is not None:
        node = cursor.node
        if node is None or node.start_byte > start or node.end_byte < end:
            break
        path.append(node)
    return [n for n in reversed(path) if n is not None]


def in_inline_context(p: Parsed, cursor: Cursor) -> bool:
    """True inside a string, comment, argument or parameter list that is still open at the cursor."""
    off = cursor.byte_offset
    for n in ancestors_of_range(p, max(off - 1, 0), off):
        if n.type in INLINE_CONTEXTS and n.start_byte < off and (n.end_byte > off or n.has_error or n.is_missing):
            return True
        if n.type in DEFINITIONS.get(p.language, set()) or n.type in ("block", "statement_block", "compound_statement"):
            return False
    return False


def definition_at(p: Parsed, line: int) -> tuple[int, int] | None:
    """What "the code at the cursor" means for explain and refactor: the definition the cursor's line starts,
    else the top-level definition around the line (1-based inclusive lines, decorators included)."""
    kinds = DEFINITIONS.get(p.language, set())
    lines = p.source.split(b"\n")
    row = max(0, min(line, len(lines) - 1))
    start_col = len(lines[row]) - len(lines[row].lstrip())
    offset = sum(len(x) + 1 for x in lines[:row])
    chain = ancestors_of_range(p, offset + start_col, offset + max(start_col, len(lines[row]) - 1))
    defs = [n for n in chain if n.type in kinds]
    starting = [n for n in defs if n.start_point[0] == row]
    node = starting[-1] if starting else (defs[-1] if defs else None)
    if node is None:
        return None
    i = chain.index(node)
    if i + 1 < len(chain) and chain[i + 1].type == "decorated_definition":
        node = chain[i + 1]  # its decorators belong to it
    return node.start_point[0] + 1, node.end_point[0] + 1 - (1 if node.end_point[1] == 0 else 0)


def error_lines(p: Parsed) -> list[int]:
    """0-based lines where the tree has ERROR or MISSING nodes (empty when it parses cleanly)."""
    rows: set[int] = set()
    stack = [p.tree.root_node]
    while stack:  # only subtrees that contain an error are walked
        n = stack.pop()
        if n.type == "ERROR" or n.is_missing:
            rows.add(n.start_point[0])
        if n.has_error:
            stack.extend(n.children)
    return sorted(rows)


def indented_block(lines: Sequence[str], line: int) -> tuple[int, int]:
    """The top-level block around a 0-based line, as 1-based inclusive lines.

    For explain/refactor with no selection in a language without a grammar here
    (or top-level code outside any definition): from the nearest unindented line
    at or above the cursor to the line before the next unindented one (a closing
    bracket or `end` stays with its block).
    """
    if not lines:
        return 1, 1
    line = max(0, min(line, len(lines) - 1))

    def top(i: int) -> bool:
        s = lines[i]
        return bool(s.strip()) and not s[0].isspace() and not _BLOCK_CLOSER.match(s)

    start = line
    while start > 0 and not top(start):
        start -= 1
    # Decorators and comments directly above a definition belong to it.
    while start > 0 and lines[start - 1].strip() and not lines[start - 1][0].isspace():
        prev = lines[start - 1].lstrip()
        if not prev.startswith(("@", "#", "//", "/*", "*")):
            break
        start -= 1
    end = line + 1
    while end < len(lines) and not top(end):
        end += 1
    while end - 1 > start and not lines[end - 1].strip():
        end -= 1
    return start + 1, max(start + 1, end)
