"""`banked demo`: the main job on a fresh machine, on a bundled sample workspace."""

from __future__ import annotations

import difflib
import os
import shutil
import time
from pathlib import Path

from banked.daemon import paths
from banked.daemon.cli.console import client, out, stream_call
from banked.daemon.cli.sample import WORKSPACE
from banked.daemon.ipc import protocol as p
from rich.table import Table


def _find(lines: list[str], needle: str) -> int:
    return next(i for i, ln in enumerate(lines) if needle in ln) + 1  # 1-based


def sample_workspace() -> Path:
    """A fresh copy of the bundled sample, with fixed old modification times (so the demo's edit is the hot
    file)."""
    ws = paths.cache_dir() / "demo-workspace"
    shutil.rmtree(ws, ignore_errors=True)
    shutil.copytree(WORKSPACE, ws, ignore=shutil.ignore_patterns("__pycache__"))
    for i, f in enumerate(sorted(ws.rglob("*"))):
        if f.is_file():
            stamp = 1_700_000_000 + i
            os.utime(f, (stamp, stamp))
    return ws


class Steps(Table):
    """The summary table: one row per step."""

    def __init__(self) -> None:
        super().__init__("step", "ms", "reused", "prefilled", "generated", "ttft ms", title="banked demo")

    def row(self, name: str, ms: float, res: p.Timings | p.WarmResult) -> None:
        cells = (
            (res.reused_tokens, res.prefilled_tokens, res.generated_tokens, res.ttft_ms)
            if isinstance(res, p.Timings)
            else ("", res.prefilled_tokens, "", "")
        )
        self.add_row(name, f"{ms:.0f}", *(str(x) for x in cells))


def run_demo() -> int:
    ws = sample_workspace()
    geo = ws / "shapes" / "geometry.py"
    table = Steps()
    row = table.row
    with client() as c:
        out.rule("[bold]1. warm the workspace")
        w = stream_call(c, p.WARM, p.WarmParams(root=str(ws)), progress_label="warming")
        out.print(f"{w.files} files, {w.tokens:,} tokens prefilled in {w.seconds:.1f}s")
        row("warm (cold)", w.seconds * 1000, w)

        out.rule("[bold]2. complete circle_perimeter's body")
        lines = geo.read_text().splitlines()
        ln = len(lines)  # the unfinished `return` is the last line
        col = len(lines[ln - 1]) + 1
        out.print(f"[dim]{geo.name}:{ln}:{col}[/]  {lines[ln - 1]}[reverse]▌[/]")
        r = c.request(p.COMPLETE, p.CompleteParams(path=str(geo), line=ln - 1, col=col - 1))
        out.print(f"[green]{r.text}[/]")
        row("complete", r.total_ms, r)

        out.rule("[bold]3. explain rectangle_perimeter")
        a = _find(lines, "def rectangle_perimeter")
        e = stream_call(c, p.EXPLAIN, p.ChatParams(path=str(geo), start_line=a, end_line=a + 2, max_tokens=160))
        out.print()
        row("explain", e.total_ms, e)

        out.rule("[bold]4. refactor circle_area: add input validation")
        a = _find(lines, "def circle_area")
        instruction = "raise ValueError if r is negative"
        params = p.RefactorParams(path=str(geo), start_line=a, end_line=a + 2, instruction=instruction, max_tokens=160)
        rf = c.request(p.REFACTOR, params)
        old = geo.read_text()
        new = p.replace_lines(old, a, a + 2, rf.replacement)
        diff = difflib.unified_diff(
            old.splitlines(True), new.splitlines(True), "a/shapes/geometry.py", "b/shapes/geometry.py"
        )
        out.print("".join(diff), markup=False)
        row("refactor", rf.total_ms, rf)

        out.rule("[bold]5. edit a line, then complete again")
        text = geo.read_text().replace(
            '"""Areas and perimeters of plane shapes."""', '"""Areas and perimeters of plane shapes (SI units)."""'
        )
        geo.write_text(text)
        time.sleep(0.6)  # let the watcher see the save
        w2 = stream_call(c, p.WARM, p.WarmParams(root=str(ws)), progress_label="re-prefilling")
        out.print(
            f"after the edit: {w2.prefilled_tokens:,} of {w2.tokens:,} tokens re-prefilled "
            f"in {w2.seconds * 1000:.0f} ms"
        )
        row("re-warm after edit", w2.seconds * 1000, w2)
        r2 = c.request(p.COMPLETE, p.CompleteParams(path=str(geo), line=ln - 1, col=col - 1))
        out.print(f"[green]{r2.text}[/]")
        row("complete after edit", r2.total_ms, r2)
    out.print(table)
    return 0
