"""Context beyond the window: import resolution, relevance ranking, the symbol map, and no churn."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from banked.daemon.config import Config
from banked.daemon.context import repomap
from banked.daemon.context.templates import template_for
from banked.daemon.context.workspace import Workspace
from banked.daemon.context.wscache import WorkspaceCache
from banked.daemon.engines.llamacpp import LlamaCppEngine
from helpers import make_files


def test_imports_resolve_to_workspace_files_per_language() -> None:
    paths = {
        "pkg/__init__.py",
        "pkg/geo.py",
        "pkg/units/__init__.py",
        "src/app/main.ts",
        "src/app/util.ts",
        "cmd/tool/main.go",
        "internal/calc/calc.go",
        "src/lib.rs",
        "src/parser.rs",
        "include/vec.h",
        "src/vec.c",
    }
    assert repomap.resolve("pkg/app.py", ".geo", paths) == ["pkg/geo.py"]
    assert repomap.resolve("pkg/app.py", "pkg.units", paths) == ["pkg/units/__init__.py"]
    assert repomap.resolve("pkg/app.py", "os.path", paths) == []  # the standard library is not the workspace
    assert repomap.resolve("src/app/main.ts", "./util", paths) == ["src/app/util.ts"]
    assert repomap.resolve("cmd/tool/main.go", "example.com/x/internal/calc", paths) == ["internal/calc/calc.go"]
    assert repomap.resolve("src/lib.rs", "mod::parser", paths) == ["src/parser.rs"]
    assert repomap.resolve("src/vec.c", "vec.h", paths) == ["include/vec.h"]


def test_rank_follows_imports_from_the_focus_file() -> None:
    graph = {"app.py": {"geo.py"}, "geo.py": {"units.py"}, "units.py": set(), "cli.py": {"log.py"}, "log.py": set()}
    score = repomap.rank(graph, {"app.py": 1.0})
    assert score["geo.py"] > score["log.py"] and score["units.py"] > score["cli.py"]


@pytest.fixture
def small(cfg: Config, tiny_model: Path) -> Iterator[LlamaCppEngine]:
    e = LlamaCppEngine(tiny_model, n_ctx=2048, n_threads=1, chunk=64)  # budget 1,536 tokens
    yield e
    e.close()


def big_workspace(root: Path) -> Path:
    """An app importing two modules, plus unrelated modules that together blow the budget."""
    body = "".join(f"    total += {i} * x\n" for i in range(12))
    files = {
        "app.py": "from geo import area\nfrom units import to_cm\n\n\ndef main(r):\n    return to_cm(area(r))\n",
        "geo.py": "import math\n\n\ndef area(r):\n    return math.pi * r * r\n",
        "units.py": "def to_cm(x):\n    return x * 2.54\n",
    }
    for i in range(12):
        files[f"extra{i:02}.py"] = f"def extra_{i}(x):\n    total = 0\n{body}    return total\n"
    return make_files(root, files)


def test_over_budget_the_imported_files_stay_and_the_rest_become_a_symbol_map(
    tmp_path: Path, cfg: Config, small: LlamaCppEngine
) -> None:
    root = big_workspace(tmp_path / "ws")
    old = 1_000_000_000
    for i in range(12):  # the extras are the most recently modified: a recency rule would keep them
        os.utime(root / f"extra{i:02}.py", ns=(old * (i + 3), old * (i + 3)))
    for name in ("app.py", "geo.py", "units.py"):
        os.utime(root / name, ns=(old, old))
    ws = Workspace(root)
    ws.scan()
    wc = WorkspaceCache(ws, small, template_for(small), cfg)
    wc.touch("app.py")
    plan = wc.plan()
    kept = [s.path for s in plan.segments if s.path and s.path != repomap.SYMBOL_MAP_PATH]
    assert {"app.py", "geo.py", "units.py"} <= set(kept)
    assert plan.dropped and len(plan.ids) <= wc.budget
    assert plan.segments[-1].path == repomap.SYMBOL_MAP_PATH  # last: cheap to re-prefill
    smap = small.detokenize(plan.ids[plan.segments[-1].start : plan.segments[-1].end]).decode()
    listed = [p for p in plan.dropped if f"{p}: def extra_{int(p[5:7])}(x)\n" in smap]
    assert listed, smap
    assert len(listed) == len(plan.dropped) or f"… and {len(plan.dropped) - len(listed)} more files" in smap

    # An edit to a dropped file changes its signature in the map only: the files before it stay.
    first = plan
    (root / plan.dropped[0]).write_text("def renamed(x, y):\n    return x\n")
    ws.refresh({plan.dropped[0]})
    wc.invalidate()
    again = wc.plan()
    assert [s.path for s in again.segments[:-1]] == [s.path for s in first.segments[:-1]]
    assert again.ids[: first.segments[-1].start] == first.ids[: first.segments[-1].start]

    # Working in a dropped file brings it in: the focus moved materially.
    wc.touch(plan.dropped[-1])
    moved = wc.plan()
    assert plan.dropped[-1] not in moved.dropped


def test_over_budget_the_file_worked_on_last_is_always_in_the_prefix(
    tmp_path: Path, cfg: Config, small: LlamaCppEngine
) -> None:
    """Even a large file nothing imports: its saved copy is what the short completion tail relies on."""
    root = big_workspace(tmp_path / "ws")
    lone = "".join(
        f"def lone_{i}(x):\n    return x + {i}\n\n\n" for i in range(30)
    )  # imports nothing, imported by none
    (root / "lone.py").write_text(lone)
    os.utime(root / "lone.py", ns=(1_000_000_000, 1_000_000_000))  # and the oldest file
    ws = Workspace(root)
    ws.scan()
    wc = WorkspaceCache(ws, small, template_for(small), cfg)
    wc.touch("app.py")
    assert "lone.py" in wc.plan().dropped
    wc.touch("lone.py")
    plan = wc.plan()
    kept = {s.path for s in plan.segments}
    assert "lone.py" in kept and "app.py" in kept  # and the file worked on before it stays too
    assert len(plan.ids) <= wc.budget


def test_over_budget_files_worked_on_lately_stay_ahead_of_what_they_import(
    tmp_path: Path, cfg: Config, small: LlamaCppEngine
) -> None:
    """PageRank alone fills the budget with a big module everything imports and drops the files being edited."""
    hub = "".join(f"def helper_{i}(x):\n    return x * {i}\n\n\n" for i in range(30))
    files = {"hub.py": hub}
    for i in range(8):
        files[f"mod{i}.py"] = "from hub import helper_1\n\n\n" + "".join(
            f"def f{i}_{k}(x):\n    return helper_1(x) + {k}\n\n\n" for k in range(6)
        )
    root = make_files(tmp_path / "ws", files)
    ws = Workspace(root)
    ws.scan()
    wc = WorkspaceCache(ws, small, template_for(small), cfg)
    for p in ("mod5.py", "mod6.py", "mod7.py"):
        wc.touch(p)
    kept = {s.path for s in wc.plan().segments}
    assert {"mod5.py", "mod6.py", "mod7.py"} <= kept


def test_dependency_order_puts_the_current_file_last_and_its_imports_just_before_it(
    tmp_path: Path, cfg: Config, small: LlamaCppEngine
) -> None:
    """`prefix_order = "deps"`: the file completed in last at the hot end, what it imports next to it; a
    switch to another file reorders the end, and the default order does not move at all."""
    files = {
        "app.py": "from geo import area\n\n\ndef main(r):\n    return area(r)\n",
        "geo.py": "import math\n\n\ndef area(r):\n    return math.pi * r * r\n",
        "units.py": "def to_cm(x):\n    return x * 2.54\n",
        "report.py": "from units import to_cm\n\n\ndef show(x):\n    print(to_cm(x))\n",
    }
    root = make_files(tmp_path / "ws", files)
    for i, name in enumerate(("app.py", "geo.py", "report.py", "units.py")):  # oldest first
        os.utime(root / name, ns=(1_000_000_000 * (i + 1),) * 2)

    def order(wc: WorkspaceCache) -> list[str]:
        return [s.path for s in wc.plan().segments if s.path]

    ws = Workspace(root)
    ws.scan()
    deps = WorkspaceCache(ws, small, template_for(small), Config(**{**vars(cfg), "prefix_order": "deps"}))
    plain = WorkspaceCache(ws, small, template_for(small), cfg)
    assert order(plain) == ["app.py", "geo.py", "report.py", "units.py"]
    for wc in (deps, plain):
        wc.touch("app.py")
    assert order(deps) == ["report.py", "units.py", "geo.py", "app.py"]
    assert order(plain) == ["app.py", "geo.py", "report.py", "units.py"]
    for wc in (deps, plain):
        wc.touch("report.py")
    assert order(deps) == ["app.py", "geo.py", "units.py", "report.py"]
    assert order(plain) == ["app.py", "geo.py", "report.py", "units.py"]
