"""`banked demo`: the main job on a fresh machine, on a bundled sample workspace."""

from __future__ import annotations

import difflib
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from . import paths
from .cli import apply_replacement, stream_call
from .client import Client
from .sample import WORKSPACE


def _find(lines: list[str], needle: str) -> int:
    return next(i for i, ln in enumerate(lines) if needle in ln) + 1  # 1-based


def run_demo(out: Console, err: Console, client: Callable[[], Client]) -> int:
    ws = paths.cache_dir() / "demo-workspace"
    shutil.rmtree(ws, ignore_errors=True)
    shutil.copytree(WORKSPACE, ws, ignore=shutil.ignore_patterns("__pycache__"))
    # A fixed, old modification time for the sample, so the demo's edit is the hot file.
    for i, p in enumerate(sorted(ws.rglob("*"))):
        if p.is_file():
            stamp = 1_700_000_000 + i
            os.utime(p, (stamp, stamp))
    geo = ws / "shapes" / "geometry.py"
    rows: list[tuple[str, str, Any]] = []
    with client() as c:
        out.rule("[bold]1. warm the workspace")
        w = stream_call(c, "warm", {"root": str(ws)}, progress_label="warming")
        out.print(f"{w['files']} files, {w['tokens']:,} tokens prefilled in {w['seconds']:.1f}s")
        rows.append(("warm (cold)", f"{w['seconds'] * 1000:.0f}", w))

        out.rule("[bold]2. complete circle_perimeter's body")
        lines = geo.read_text().splitlines()
        ln = len(lines)  # the unfinished `return` is the last line
        col = len(lines[ln - 1]) + 1
        out.print(f"[dim]{geo.name}:{ln}:{col}[/]  {lines[ln - 1]}[reverse]▌[/]")
        r = c.call("complete", {"path": str(geo), "line": ln - 1, "col": col - 1})
        out.print(f"[green]{r['text']}[/]")
        rows.append(("complete", f"{r['total_ms']:.0f}", r))

        out.rule("[bold]3. explain rectangle_perimeter")
        a = _find(lines, "def rectangle_perimeter")
        e = stream_call(c, "explain", {"path": str(geo), "start_line": a, "end_line": a + 2, "max_tokens": 160})
        out.print()
        rows.append(("explain", f"{e['total_ms']:.0f}", e))

        out.rule("[bold]4. refactor circle_area: add input validation")
        a = _find(lines, "def circle_area")
        rf = c.call(
            "refactor",
            {
                "path": str(geo),
                "start_line": a,
                "end_line": a + 2,
                "instruction": "raise ValueError if r is negative",
                "max_tokens": 160,
            },
        )
        old = geo.read_text()
        new = apply_replacement(old, a, a + 2, rf["replacement"])
        out.print(
            "".join(
                difflib.unified_diff(
                    old.splitlines(True), new.splitlines(True), "a/shapes/geometry.py", "b/shapes/geometry.py"
                )
            ),
            markup=False,
        )
        rows.append(("refactor", f"{rf['total_ms']:.0f}", rf))

        out.rule("[bold]5. edit a line, then complete again")
        text = geo.read_text().replace(
            '"""Areas and perimeters of plane shapes."""', '"""Areas and perimeters of plane shapes (SI units)."""'
        )
        geo.write_text(text)
        time.sleep(0.6)  # let the watcher see the save
        w2 = stream_call(c, "warm", {"root": str(ws)}, progress_label="re-prefilling")
        out.print(
            f"after the edit: {w2['prefilled_tokens']:,} of {w2['tokens']:,} tokens re-prefilled "
            f"in {w2['seconds'] * 1000:.0f} ms"
        )
        rows.append(("re-warm after edit", f"{w2['seconds'] * 1000:.0f}", w2))
        r2 = c.call("complete", {"path": str(geo), "line": ln - 1, "col": col - 1})
        out.print(f"[green]{r2['text']}[/]")
        rows.append(("complete after edit", f"{r2['total_ms']:.0f}", r2))

    t = Table("step", "ms", "reused", "prefilled", "generated", "ttft ms", title="banked demo")
    for name, ms, res in rows:
        t.add_row(
            name,
            ms,
            str(res.get("reused_tokens", "")),
            str(res.get("prefilled_tokens", "")),
            str(res.get("generated_tokens", "")),
            str(res.get("ttft_ms", "")),
        )
    out.print(t)
    return 0
