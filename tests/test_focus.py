"""The focus segment: the definitions the cursor needs, found through banked's own parse and import graph."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from banked.daemon.config import Config
from banked.daemon.context import focus, repomap, syntax
from banked.daemon.context.cursor import Cursor
from banked.daemon.context.templates import template_for
from banked.daemon.context.workspace import Workspace
from banked.daemon.context.wscache import WorkspaceCache
from banked.daemon.engines.llamacpp import LlamaCppEngine
from helpers import make_files

SHAPES = '''"""Shapes."""


class Widget:
    """A thing on the screen."""

    def __init__(self, name, size):
        self.name = name
        self.size = size

    def grow(self, by):
        self.size += by

    def area(self):
        return self.size * self.size

    def shrink(self, by):
        self.size -= by


def make_widget(name, size=1):
    """A new widget, registered."""
    return Widget(name, size)


def unrelated_helper():
    return 42
'''

LAYOUT = '''"""Layout."""

from .shapes import Widget, make_widget
from .colors import paint


def place(items):
    placed = []
    for item in items:
        placed.append(item)

    return placed
'''

COLORS = '''def paint(thing, color):
    """Paint a thing."""
    thing.color = color
'''


def infos_of(ws: Workspace) -> dict[str, repomap.FileInfo]:
    rm = repomap.RepoMap()
    return {p: rm.info(p, f.text, f.digest) for p, f in ws.files.items()}


@pytest.fixture
def cfg(cfg: Config) -> Config:
    """The focus segment on, as it is by default on a GPU or a server (on a CPU it is off unless set)."""
    return dataclasses.replace(cfg, focus_tokens=600)


def test_imported_names_come_first_and_unused_imports_count(tmp_path: Path) -> None:
    ws = Workspace(make_files(tmp_path, {"pkg/shapes.py": SHAPES, "pkg/layout.py": LAYOUT, "pkg/colors.py": COLORS}))
    ws.scan()
    text = LAYOUT
    cursor = Cursor.at(text, 9, 0)  # the empty line inside the loop: about to use something
    parsed = syntax.parse_text("python", text)
    got = focus.wanted("pkg/layout.py", parsed, cursor, infos_of(ws))
    names = [w.symbol.name for w in got]
    assert set(names[:3]) == {"Widget", "make_widget", "paint"}  # imported, not yet used
    assert "unrelated_helper" not in names


def test_names_used_near_the_cursor_resolve_to_other_files(tmp_path: Path) -> None:
    ws = Workspace(make_files(tmp_path, {"pkg/shapes.py": SHAPES, "pkg/colors.py": COLORS}))
    ws.scan()
    text = "from . import shapes\n\n\ndef big(w):\n    w.grow(10)\n    return w.area()\n\n"
    got = focus.wanted("pkg/use.py", syntax.parse_text("python", text), Cursor.at(text, 6, 0), infos_of(ws))
    assert {w.symbol.name for w in got} >= {"grow", "area"}
    assert got[0].path == "pkg/shapes.py"  # the module `from . import shapes` names is a dependency


def test_excerpts_keep_small_bodies_and_cut_large_ones(tmp_path: Path) -> None:
    ws = Workspace(make_files(tmp_path, {"pkg/shapes.py": SHAPES}))
    ws.scan()
    infos = infos_of(ws)
    syms = {s.name: s for s in infos["pkg/shapes.py"].symbols}
    small = focus.excerpt(SHAPES, syms["make_widget"], infos["pkg/shapes.py"].symbols)
    assert small == 'def make_widget(name, size=1):\n    """A new widget, registered."""\n    return Widget(name, size)'
    big = focus.excerpt(SHAPES, syms["Widget"], infos["pkg/shapes.py"].symbols)
    assert big.startswith('class Widget:\n    """A thing on the screen."""')
    assert "    def grow(self, by): ..." in big and "self.size += by" not in big


def test_the_segment_does_not_change_while_typing_on_a_line(
    tmp_path: Path, cfg: Config, engine: LlamaCppEngine
) -> None:
    ws = Workspace(make_files(tmp_path, {"pkg/shapes.py": SHAPES, "pkg/layout.py": LAYOUT, "pkg/colors.py": COLORS}))
    ws.scan()
    wc = WorkspaceCache(ws, engine, template_for(engine), cfg)
    first = None
    for typed in ("", "w", "w = ", "w = make_"):
        text = LAYOUT.replace("        placed.append(item)\n", "        placed.append(item)\n        " + typed)
        ids = wc.focus("pkg/layout.py", Cursor.at(text, 9, 8 + len(typed)), syntax.parse_text("python", text))
        first = ids if first is None else first
        assert ids == first
    rendered = engine.detokenize(first).decode()
    assert "def make_widget(name, size=1):" in rendered and "pkg/shapes.py" in rendered
    assert len(first) <= cfg.focus_tokens


def test_prefix_focus_and_tail_always_fit_the_context(tmp_path: Path, cfg: Config, engine: LlamaCppEngine) -> None:
    """A small context keeps a quarter for the tail: a full workspace plus the longest tail still fits."""
    files = {f"pkg/m{i}.py": f"def f{i}(x):\n    return x + {i}\n" * 120 for i in range(12)}
    ws = Workspace(make_files(tmp_path, {**files, "pkg/layout.py": LAYOUT, "pkg/shapes.py": SHAPES}))
    ws.scan()
    wc = WorkspaceCache(ws, engine, template_for(engine), cfg)
    buffer = LAYOUT + "x = 1\n" * 3000
    cursor = Cursor.at(buffer, 3005, 0)
    focus_ids = wc.focus("pkg/layout.py", cursor, syntax.parse_text("python", buffer))
    tail = wc.fim_tail("pkg/layout.py", cursor, cfg.max_tokens, before_it=len(focus_ids))
    assert len(wc.plan().ids) + len(focus_ids) + len(tail) + cfg.max_tokens <= engine.info.n_ctx


def test_new_lines_change_the_segment_only_once_saved(tmp_path: Path, cfg: Config, engine: LlamaCppEngine) -> None:
    """A name typed on an earlier line of the new code would re-prefill the whole tail at every line (20 s deep
    in a workspace on 2 cores): the segment follows the file as the prefix holds it, so it waits for a save."""
    sizes = "def clamp_size(n, low=1, high=99):\n    return max(low, min(high, n))\n"
    root = make_files(tmp_path, {"pkg/shapes.py": SHAPES, "pkg/layout.py": LAYOUT, "pkg/sizes.py": sizes})
    ws = Workspace(root)
    ws.scan()
    wc = WorkspaceCache(ws, engine, template_for(engine), cfg)
    new_code = ["size = clamp_size(item.size)", "item.grow(size)", "placed.append(item)"]
    first = None
    for n in range(len(new_code) + 1):  # line after line, the cursor on the empty line below what was typed
        typed = "".join(f"        {ln}\n" for ln in new_code[:n])
        text = LAYOUT.replace("        placed.append(item)\n", typed + "        \n")
        ids = wc.focus("pkg/layout.py", Cursor.at(text, 9 + n, 8), syntax.parse_text("python", text))
        first = ids if first is None else first
        assert ids == first, f"the segment changed after typing {new_code[:n]}"
    assert "clamp_size" not in engine.detokenize(first).decode()

    (root / "pkg/layout.py").write_text(text)  # saved: now the prefix holds the new lines, and so does the segment
    ws.refresh({"pkg/layout.py"})
    wc.invalidate()
    saved = wc.focus("pkg/layout.py", Cursor.at(text, 9 + len(new_code), 8), syntax.parse_text("python", text))
    assert "def clamp_size(n, low=1, high=99):" in engine.detokenize(saved).decode()
