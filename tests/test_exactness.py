"""The incremental cache equals a fresh prefill of the same tokens, after any series of edits.

Random edits (insert/delete/modify lines, rename, create, delete files) in cold
files, hot files and the active file, with unsaved overlays, compactions,
interrupted syncs and FIM tails at random cursors. After each step the
next-token logits of the incrementally updated cache are compared with a
second engine that prefilled the whole sequence from scratch.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from banked.daemon.config import Config
from banked.daemon.context.cursor import Cursor, window_start
from banked.daemon.context.templates import template_for
from banked.daemon.context.workspace import Workspace
from banked.daemon.context.wscache import WorkspaceCache
from banked.daemon.engines.base import common_prefix
from banked.daemon.engines.generation import Generation, TextStream, run_generation
from banked.daemon.engines.llamacpp import LlamaCppEngine
from hypothesis import given
from hypothesis import strategies as st

WORDS = ["alpha", "beta", "gamma", "delta", "return", "self", "value", "None", "def", "class"]
WORDS += ["import", "for", "in", "if", "else"]


def rand_line(rng: random.Random) -> str:
    return "    " * rng.randint(0, 2) + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))


class World:
    def __init__(self, root: Path, rng: random.Random):
        self.root, self.rng, self.clock = root, rng, 1_600_000_000
        for i in range(8):
            self.write(f"pkg/mod{i}.py", "\n".join(rand_line(rng) for _ in range(rng.randint(3, 12))))

    def write(self, rel: str, text: str) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text + "\n")
        self.clock += 10
        os.utime(p, (self.clock, self.clock))

    def files(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*.py"))

    def pick(self, where: str) -> str:
        files = sorted(self.files(), key=lambda r: ((self.root / r).stat().st_mtime_ns, r))
        return {"cold": files[0], "hot": files[-1], "middle": files[len(files) // 2]}[where]

    def edit_lines(self, rel: str) -> None:
        lines = (self.root / rel).read_text().splitlines() or [""]
        op = self.rng.choice(["insert", "delete", "modify"])
        i = self.rng.randrange(len(lines))
        if op == "insert":
            lines.insert(i, rand_line(self.rng))
        elif op == "delete" and len(lines) > 1:
            del lines[i]
        else:
            lines[i] = rand_line(self.rng)
        self.write(rel, "\n".join(lines))


def fresh_logits(fresh: LlamaCppEngine, seq: list[int]) -> np.ndarray:
    fresh.truncate(0)
    fresh.prefill(seq)
    return fresh.logits()


@pytest.mark.parametrize("seed", range(4))
def test_incremental_equals_fresh_prefill(tmp_path: Path, cfg: Config, tiny_model: Path, seed: int) -> None:
    rng = random.Random(seed)
    world = World(tmp_path / "ws", rng)
    engine = LlamaCppEngine(tiny_model, n_ctx=cfg.n_ctx, n_threads=1, chunk=cfg.prefill_chunk)
    fresh = LlamaCppEngine(tiny_model, n_ctx=cfg.n_ctx, n_threads=1, chunk=512)
    ws = Workspace(tmp_path / "ws")
    wc = WorkspaceCache(ws, engine, template_for(engine), cfg)
    ws.scan()
    wc.sync()
    active = world.pick("middle")
    checks = 0
    for _step in range(24):
        op = rng.choice(["edit", "edit", "edit", "rename", "create", "delete", "overlay", "fim", "partial", "stale"])
        changed: set[str] = set()
        if op == "edit":
            rel = world.pick(rng.choice(["cold", "hot", "middle"]))
            world.edit_lines(rel)
            changed = {rel}
        elif op == "rename":
            rel = world.pick(rng.choice(["cold", "middle"]))
            new = f"pkg/renamed{_step}.py"
            os.rename(tmp_path / "ws" / rel, tmp_path / "ws" / new)
            changed = {rel, new}
        elif op == "create":
            new = f"pkg/new{_step}.py"
            world.write(new, rand_line(rng))
            changed = {new}
        elif op == "delete" and len(world.files()) > 3:
            rel = world.pick(rng.choice(["cold", "hot", "middle"]))
            (tmp_path / "ws" / rel).unlink()
            changed = {rel}
        elif op == "overlay":
            active = rng.choice(world.files())
            text = (tmp_path / "ws" / active).read_text() + rand_line(rng) + "\n"
            wc.set_overlay(active, text)
            if rng.random() < 0.5:
                wc.compact()
        ws.refresh(changed)
        wc.invalidate()
        if op == "partial":
            # A background sync interrupted after one chunk, as when a completion preempts it.
            world.edit_lines(world.pick("cold"))
            ws.scan()
            wc.invalidate()
            calls = iter([False, True])
            wc.sync(should_stop=lambda calls=calls: next(calls, True))  # type: ignore[misc]
        if op == "stale":
            # An edit whose sync waits for the user to pause: requests run after the plan the cache holds whole.
            rel = world.pick(rng.choice(["cold", "hot", "middle"]))
            world.edit_lines(rel)
            ws.refresh({rel})
            wc.invalidate()
        if op in ("fim", "partial", "stale") and active in ws.files:
            text = wc.overlays.get(active) or (tmp_path / "ws" / active).read_text()
            lines = text.split("\n")
            line = rng.randrange(len(lines))
            col = rng.randint(0, len(lines[line]))
            g = Generation(wc.fim_tail(active, Cursor.at(text, line, col)), set(), 3, TextStream(engine))
            assert run_generation(wc, g)
            seq = list(engine.cached)
            held = wc.context_plan().ids
            n = common_prefix(seq, held)
            assert seq[:n] == held[:n] and (n == len(held) or n == wc.usable_prefix()), "a prefix of one plan"
        else:
            wc.sync()
            seq = list(engine.cached)
            assert seq == wc.plan().ids, "after a sync the cache is exactly the plan"
        inc = engine.logits()
        ref = fresh_logits(fresh, seq)
        assert int(np.argmax(inc)) == int(np.argmax(ref))
        assert float(np.abs(inc - ref).max()) <= 1e-3
        checks += 1
    assert checks >= 20


def warm_world(tmp_path: Path, seed: int, cfg: Config, engine: LlamaCppEngine) -> WorkspaceCache:
    """A random workspace under tmp_path/ws, scanned and prefilled."""
    World(tmp_path / "ws", random.Random(seed))
    wc = WorkspaceCache(Workspace(tmp_path / "ws"), engine, template_for(engine), cfg)
    wc.ws.scan()
    wc.sync()
    return wc


def test_an_edit_re_prefills_only_what_follows(tmp_path: Path, cfg: Config, engine: LlamaCppEngine) -> None:
    world = World(tmp_path / "ws", random.Random(7))
    ws = Workspace(tmp_path / "ws")
    wc = WorkspaceCache(ws, engine, template_for(engine), cfg)
    ws.scan()
    total = wc.sync()
    assert total == len(wc.plan().ids)
    hot = world.pick("hot")
    seg = next(s for s in wc.plan().segments if s.path == hot)
    world.edit_lines(hot)
    ws.refresh({hot})
    wc.invalidate()
    again = wc.sync()
    # The hot file is last: only it (from its first changed token) is re-prefilled.
    assert 0 < again <= seg.end - seg.start + 8
    assert common_prefix(engine.cached, wc.plan().ids) == len(wc.plan().ids)


def test_a_request_runs_after_the_held_plan_while_a_newer_one_waits(
    tmp_path: Path, cfg: Config, engine: LlamaCppEngine, tiny_model: Path
) -> None:
    """A saved (or folded-in) change near the top of the file being edited: until its sync runs, requests run
    after the plan the cache holds whole, paying only their tail, and stay exact; the sync then moves on."""
    world = World(tmp_path / "ws", random.Random(9))
    wc = warm_world(tmp_path, 9, cfg, engine)
    hot = world.pick("hot")
    text = (tmp_path / "ws" / hot).read_text() + "\n".join(rand_line(random.Random(i)) for i in range(30)) + "\n"
    world.write(hot, text.rstrip("\n"))
    wc.ws.refresh({hot})
    wc.invalidate()
    wc.sync()
    held = list(wc.plan().ids)
    cursor_text = (tmp_path / "ws" / hot).read_text()

    def complete() -> Generation:
        g = Generation(wc.fim_tail(hot, Cursor.at(cursor_text, 20, 0)), set(), 2, TextStream(engine))
        assert run_generation(wc, g)
        return g

    complete()
    lines = cursor_text.split("\n")
    lines.insert(1, "gamma = delta")  # near the top of the hot file: a newer plan, most of the file to re-prefill
    world.write(hot, "\n".join(lines).rstrip("\n"))
    wc.ws.refresh({hot})
    wc.invalidate()
    assert wc.plan().ids != held and wc.holds_older_plan()
    g = complete()
    assert g.prefilled_tokens <= 4, "only the tail's own change, not the rest of the file"
    seq = list(engine.cached)
    assert seq[: len(held)] == held
    fresh = LlamaCppEngine(tiny_model, n_ctx=cfg.n_ctx, n_threads=1, chunk=512)
    inc, ref = engine.logits(), fresh_logits(fresh, seq)
    assert int(np.argmax(inc)) == int(np.argmax(ref)) and float(np.abs(inc - ref).max()) <= 1e-3
    wc.sync()
    assert not wc.holds_older_plan() and list(engine.cached) == wc.plan().ids


def test_typing_re_prefills_typed_tokens_plus_suffix_window(
    tmp_path: Path, cfg: Config, engine: LlamaCppEngine
) -> None:
    wc = warm_world(tmp_path, 3, cfg, engine)
    rel = "pkg/mod3.py"
    text = (tmp_path / "ws" / rel).read_text() + "\n".join(rand_line(random.Random(i)) for i in range(40))
    lines = text.split("\n")
    line, typed = 2, "value = alpha"
    base = lines[line]
    for k in range(1, len(typed) + 1):
        lines[line] = base + typed[:k]
        cur = "\n".join(lines)
        g = Generation(wc.fim_tail(rel, Cursor.at(cur, line, len(base) + k)), set(), 1, TextStream(engine))
        run_generation(wc, g)
        if k > 1:  # typing new code at the end of a line: the short suffix window
            assert g.prefilled_tokens <= 1 + cfg.eol_suffix_tokens + 8, f"keystroke {k}"
    lines[line] = base + typed  # typing in the middle of a line: the rest of it matters, the whole window
    for k in range(1, 4):
        lines[line] = lines[line][:k] + "x" + lines[line][k:]
        cur = "\n".join(lines)
        g = Generation(wc.fim_tail(rel, Cursor.at(cur, line, k + 1)), set(), 1, TextStream(engine))
        run_generation(wc, g)
        if k > 1:
            assert cfg.eol_suffix_tokens + 8 < g.prefilled_tokens <= 1 + cfg.suffix_tokens + 8, f"mid-line {k}"


@given(st.integers(0, 5000), st.integers(1, 60), st.integers(0, 80), st.one_of(st.none(), st.integers(0, 5000)))
def test_the_prefix_window_holds_the_lines_above_and_keeps_its_start_while_typing_on(
    line: int, lines_before: int, slack: int, previous: int | None
) -> None:
    start = window_start(line, lines_before, slack, previous)
    assert start <= max(0, line - lines_before)  # at least `lines_before` lines above the cursor
    assert start >= line - lines_before - slack  # never more than `slack` lines longer
    if previous is None or not line - lines_before - slack <= previous <= line - lines_before:
        assert start == max(0, line - lines_before)  # a jump: exactly the lines it needs
    for down in range(1, slack + 1):  # typing on below: the window starts where it did, until it is too long
        if start >= line + down - lines_before - slack:
            assert window_start(line + down, lines_before, slack, start) == start


def test_a_jump_prefills_a_short_window_that_stays_put_while_typing_on(
    tmp_path: Path, cfg: Config, engine: LlamaCppEngine
) -> None:
    """The first call at a new place pays for its whole tail at the workspace's depth: its window is only
    `prefix_lines` lines, and typing on below it re-prefills nothing of it."""
    wc = warm_world(tmp_path, 11, cfg, engine)
    rel = "pkg/mod1.py"
    lines = [rand_line(random.Random(i)) for i in range(120)]
    row = 95  # far from a multiple of 50: a window aligned to 50 lines would start 45 lines up
    lines[row] = ""

    def complete(row: int, col: int) -> Generation:
        g = Generation(wc.fim_tail(rel, Cursor.at("\n".join(lines), row, col)), set(), 1, TextStream(engine))
        run_generation(wc, g)
        return g

    jump = complete(row, 0)
    window = len(wc.tpl.tokens("\n".join(lines[row - wc.cfg.prefix_lines : row]) + "\n"))
    assert jump.prefilled_tokens <= window + cfg.eol_suffix_tokens + 16
    for k, typed in enumerate(["value = alpha", "return value", "if beta:"]):  # three new lines below it
        lines[row + k] = typed
        lines.insert(row + k + 1, "")
        g = complete(row + k + 1, 0)
        assert g.prefilled_tokens <= len(wc.tpl.tokens(typed)) + cfg.eol_suffix_tokens + 16, f"line {k + 1}"


def test_a_request_prefills_its_tail_in_large_steps_and_stays_exact(
    tmp_path: Path, cfg: Config, tiny_model: Path
) -> None:
    """The first completion at a new place is mostly its tail's prefill: a request takes the engine's larger
    steps for it (faster per token on a CPU), while background syncs keep the small ones they yield after."""
    World(tmp_path / "ws", random.Random(5))
    engine = LlamaCppEngine(tiny_model, n_ctx=cfg.n_ctx, n_threads=1, chunk=8, burst=32)
    fresh = LlamaCppEngine(tiny_model, n_ctx=cfg.n_ctx, n_threads=1, chunk=512)
    steps: list[int] = []
    forward = engine._forward

    def spy(ids: Sequence[int], want_logits: bool) -> None:
        steps.append(len(ids))
        forward(ids, want_logits)

    engine._forward = spy  # type: ignore[method-assign]
    ws = Workspace(tmp_path / "ws")
    wc = WorkspaceCache(ws, engine, template_for(engine), cfg)
    ws.scan()
    wc.sync()
    assert steps and max(steps) <= 8, "a background sync steps in the small chunk"
    rel = "pkg/mod2.py"
    text = (tmp_path / "ws" / rel).read_text()
    tail = wc.fim_tail(rel, Cursor.at(text, 2, 0))
    assert len(tail) > 64
    steps.clear()
    g = Generation(tail, set(), 1, TextStream(engine), chunk=engine.burst)
    assert run_generation(wc, g)
    assert max(steps) == 32 and len(steps) <= -(-len(tail) // 32) + 2
    seq = list(engine.cached)
    inc = engine.logits()
    ref = fresh_logits(fresh, seq)
    assert int(np.argmax(inc)) == int(np.argmax(ref))
    assert float(np.abs(inc - ref).max()) <= 1e-3
