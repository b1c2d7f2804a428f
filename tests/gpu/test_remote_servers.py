"""The remote engine against real vLLM and SGLang servers on a GPU (no stand-in server: where a GPU is lent).

A tiny random Qwen2 in HF format (the exl2 tests' model, byte-level tokenizer) is served; banked tokenizes with
the same vocabulary from the tiny GGUF, checks it against the server's at connect, sends token ids, and reads
the server's own cached-token counts. Run: `pip install vllm` (or `sglang[all]`) on the GPU machine, then
`pytest tests/gpu/test_remote_servers.py` (bench/README.md has the device commands).
"""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from banked.daemon.config import Config
from banked.daemon.context.cursor import Cursor
from banked.daemon.context.templates import template_for
from banked.daemon.context.workspace import Workspace
from banked.daemon.context.wscache import WorkspaceCache
from banked.daemon.engines.generation import Generation, TextStream, run_generation
from banked.daemon.engines.remote import make_remote
from banked.daemon.engines.tinyhf import write_tiny_qwen2_hf
from banked.daemon.engines.tinymodel import write_tiny_qwen2
from server_helpers import free_port

WORDS = ["alpha", "beta", "gamma", "delta", "return", "self", "value", "None", "def", "class"]


def start(cmd: list[str], url: str, log: Path, timeout: float = 600) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"), "HF_HUB_OFFLINE": "1"}
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return proc
        except OSError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError(f"server did not start: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("served")
    return write_tiny_qwen2_hf(base / "hf", ctx=8192), write_tiny_qwen2(base / "vocab.gguf")


def server_cmd(kind: str, model: Path, port: int) -> list[str]:
    if kind == "vllm":
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--port",
                str(port), "--enable-prefix-caching", "--enable-prompt-tokens-details", "--max-model-len", "8192",
                "--dtype", "float16", "--gpu-memory-utilization", "0.3", "--enforce-eager"]  # fmt: skip
    return [sys.executable, "-m", "sglang.launch_server", "--model-path", str(model), "--port", str(port),
            "--context-length", "8192", "--mem-fraction-static", "0.3", "--disable-cuda-graph"]  # fmt: skip


@pytest.fixture(params=["vllm", "sglang"])
def served(request: pytest.FixtureRequest, models: tuple[Path, Path], tmp_path: Path) -> Iterator[tuple[str, str]]:
    kind = request.param
    if importlib.util.find_spec(kind) is None:
        pytest.skip(f"{kind} is not installed on this GPU machine")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(server_cmd(kind, models[0], port), url, tmp_path / f"{kind}.log")
    yield kind, url
    proc.terminate()
    proc.wait(60)


def test_the_server_keeps_the_workspace_and_an_edit_costs_only_the_tail(
    served: tuple[str, str], models: tuple[Path, Path], tmp_path: Path
) -> None:
    kind, url = served
    rng = random.Random(0)
    root = tmp_path / "ws"
    for i in range(4):
        p = root / "pkg" / f"mod{i}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(6)) for _ in range(20)) + "\n")
    engine = make_remote(url, "auto", models[1], None, n_ctx=8192, chunk=4096)
    assert engine.server_info.kind == kind
    wc = WorkspaceCache(Workspace(root), engine, template_for(engine), Config(n_ctx=8192))
    wc.ws.scan()
    wc.sync()
    text = (root / "pkg/mod2.py").read_text()
    lines = text.split("\n")

    def complete(line: int) -> Generation:
        engine.check()
        g = Generation(wc.fim_tail("pkg/mod2.py", Cursor.at("\n".join(lines), line, len(lines[line]))), set(), 8,
                       TextStream(engine))  # fmt: skip
        assert run_generation(wc, g)
        return g

    first = complete(10)
    assert len(first.generated) > 0
    n = len(wc.plan().ids)
    lines[10] += " beta"
    g = complete(10)
    # the server's own count: the workspace came from its prefix cache (counted in blocks of 16 tokens or so)
    assert g.reused_tokens >= n - 32, f"{kind} reused {g.reused_tokens} of a {n}-token workspace"
    assert g.prefilled_tokens <= 200
    engine.close()
