"""The remote engine against a real llama.cpp `llama-server` on loopback, with the tests' tiny model.

Each request carries token ids; the server's own counts (what it reused, what it computed) are what these
tests read, so "prefills only the tail" is the server's word, not the client's belief.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from banked.daemon.config import Config
from banked.daemon.context.cursor import Cursor
from banked.daemon.context.templates import template_for
from banked.daemon.context.workspace import Workspace
from banked.daemon.context.wscache import WorkspaceCache
from banked.daemon.engines.base import EngineError
from banked.daemon.engines.generation import Generation, TextStream, run_generation
from banked.daemon.engines.llamacpp import LlamaCppEngine
from banked.daemon.engines.remote import RemoteEngine, make_remote, read_api_key
from banked.daemon.engines.servers import Http, ServerError
from banked.daemon.engines.tinymodel import write_tiny_qwen2
from helpers import DaemonProc, make_repo
from server_helpers import ServerProc

WORDS = ["alpha", "beta", "gamma", "delta", "return", "self", "value", "None", "def", "class", "if", "for"]


def source(rng: random.Random, lines: int) -> str:
    return "\n".join("    " * rng.randint(0, 2) + " ".join(rng.choice(WORDS) for _ in range(5)) for _ in range(lines))


def workspace(root: Path, seed: int, files: int = 4) -> Path:
    """About 1,500 tokens of the tiny model's byte-level vocabulary: the whole of it fits a 4k slot."""
    rng = random.Random(seed)
    return make_repo(root, {f"pkg/mod{i}.py": source(rng, 12) + "\n" for i in range(files)})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' tiny model, writing ASCII only: llama.cpp's server streams the id of a token only once the
    text it ends is whole UTF-8 (a random byte model writes broken UTF-8 all the time; code seldom does)."""
    return write_tiny_qwen2(tmp_path_factory.mktemp("model") / "tiny-ascii.gguf", ascii_only=True)


@pytest.fixture
def server(tiny_model: Path, tmp_path: Path) -> Iterator[ServerProc]:
    s = ServerProc(tiny_model, tmp_path / "server").start()
    yield s
    s.stop()


def remote(server: ServerProc, tiny_model: Path, slot: int = -1) -> RemoteEngine:
    return make_remote(server.url, "llama.cpp", tiny_model, None, slot=slot, n_ctx=4096, chunk=512)


def warm(engine: RemoteEngine | LlamaCppEngine, root: Path, cfg: Config) -> WorkspaceCache:
    wc = WorkspaceCache(Workspace(root), engine, template_for(engine), cfg)
    wc.ws.scan()
    wc.sync()
    return wc


def complete(wc: WorkspaceCache, rel: str, text: str, line: int, col: int, n: int = 12) -> Generation:
    wc.engine.check()  # as the daemon does before each request: is the server's slot still this workspace's?
    g = Generation(wc.fim_tail(rel, Cursor.at(text, line, col)), wc.tpl.fim_stops, n, TextStream(wc.engine))
    assert run_generation(wc, g)
    return g


def test_answers_equal_the_local_engine_and_an_edit_prefills_only_the_tail(
    server: ServerProc, tiny_model: Path, tmp_path: Path, cfg: Config
) -> None:
    root = workspace(tmp_path / "ws", 1)
    far = remote(server, tiny_model)
    near = LlamaCppEngine(tiny_model, n_ctx=4096, n_threads=1, chunk=64)
    wr, wl = warm(far, root, cfg), warm(near, root, cfg)
    assert far.last.cached + far.last.prefilled == len(wr.plan().ids), "the server holds the whole workspace"
    rel = "pkg/mod3.py"
    text = (root / rel).read_text()
    for line in (3, 7, 11):
        col = len(text.split("\n")[line])
        r, loc = complete(wr, rel, text, line, col), complete(wl, rel, text, line, col)
        assert r.generated == loc.generated, f"greedy answers differ at line {line}"
        assert r.reused_tokens >= len(wr.plan().ids), "the workspace came from the server's cache"
    lines = text.split("\n")
    lines[11] += " beta"  # the user types on at the end of the line
    g = complete(wr, rel, "\n".join(lines), 11, len(lines[11]))
    assert 0 < g.prefilled_tokens <= 6 + cfg.eol_suffix_tokens + 4, "the server's count: what was typed and after"
    far.close()
    near.close()


def test_two_users_on_two_slots_do_not_evict_each_other(
    server: ServerProc, tiny_model: Path, tmp_path: Path, cfg: Config
) -> None:
    a, b = remote(server, tiny_model), remote(server, tiny_model)
    wa, wb = warm(a, workspace(tmp_path / "a", 2), cfg), warm(b, workspace(tmp_path / "b", 3), cfg)
    assert a.slot is not None and b.slot is not None and a.slot != b.slot
    for _ in range(3):
        for engine, wc in ((a, wa), (b, wb)):
            text = (wc.ws.root / "pkg/mod1.py").read_text()
            g = complete(wc, "pkg/mod1.py", text, 5, 3)
            assert g.reused_tokens >= len(wc.plan().ids), "each user's workspace stayed in their slot"
            assert engine.lost == 0
    a.close()
    b.close()


def test_a_taken_slot_and_a_restarted_server_restore_from_the_servers_disk(
    server: ServerProc, tiny_model: Path, tmp_path: Path, cfg: Config
) -> None:
    a = remote(server, tiny_model, slot=0)
    wa = warm(a, workspace(tmp_path / "a", 4), cfg)
    n = len(wa.plan().ids)
    (tmp_path / "snap").mkdir()
    a.save(tmp_path / "snap" / "kv.note")  # what the daemon's idle snapshot does: the server writes the slot
    intruder = remote(server, tiny_model, slot=0)  # another user pinned to the same slot
    warm(intruder, workspace(tmp_path / "b", 5), cfg)
    text = (wa.ws.root / "pkg/mod2.py").read_text()
    g = complete(wa, "pkg/mod2.py", text, 4, 2)
    assert a.lost == 1, "the daemon saw its slot taken"
    assert g.reused_tokens >= n, "and took the workspace back from the server's disk, not by a re-prefill"
    assert g.prefilled_tokens < n // 4
    server.kill()
    server.start()  # its memory is gone; its disk is not
    g = complete(wa, "pkg/mod2.py", text, 4, 2)
    assert a.lost == 2 and g.reused_tokens >= n and g.prefilled_tokens < n // 4
    a.close()
    intruder.close()


def test_a_server_killed_mid_answer_is_a_clear_error_then_it_recovers(
    server: ServerProc, tiny_model: Path, tmp_path: Path, cfg: Config
) -> None:
    a = remote(server, tiny_model)
    wa = warm(a, workspace(tmp_path / "a", 6), cfg)
    text = (wa.ws.root / "pkg/mod0.py").read_text()
    started = threading.Event()
    g = Generation(wa.fim_tail("pkg/mod0.py", Cursor.at(text, 3, 0)), set(), 4000, TextStream(a))
    g.on_text = lambda _t: started.set()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            run_generation(wa, g)
        except EngineError as exc:
            failure.append(exc)

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(60)
    server.kill()
    t.join(60)
    assert not t.is_alive(), "no hang"
    assert failure, "a clear error, not a quiet half answer"
    assert "server" in str(failure[0]) or "answer" in str(failure[0])
    server.start()
    wa.ws.scan()
    g = complete(wa, "pkg/mod0.py", text, 3, 0)
    assert len(g.generated) > 0, "answers again once the server is back"
    a.close()


def test_a_server_of_another_model_family_is_refused(server: ServerProc, tmp_path: Path, tiny_model: Path) -> None:
    other = write_tiny_qwen2(tmp_path / "other-vocab.gguf", extra_merge=("Ġ", "t"))
    with pytest.raises(EngineError, match="tokenizes differently"):
        make_remote(server.url, "llama.cpp", other, None)


def test_nothing_crosses_a_network_unencrypted_and_keys_stay_private(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="https"):
        Http("http://10.20.30.40:8080")
    Http("http://127.0.0.1:8080")  # loopback: fine
    Http("http://10.20.30.40:8080", insecure=True)  # said so
    key = tmp_path / "key"
    key.write_text("sekrit\n")
    key.chmod(0o644)
    with pytest.raises(EngineError, match="chmod 600"):
        read_api_key("", str(key))
    key.chmod(0o600)
    assert read_api_key("", str(key)) == "sekrit"
    os.environ["BANKED_TEST_KEY"] = "from-env"
    try:
        assert read_api_key("BANKED_TEST_KEY", str(key)) == "from-env"
    finally:
        del os.environ["BANKED_TEST_KEY"]


def remote_daemon(server: ServerProc, banked_env: dict[str, str], tiny_model: Path, **more: str) -> DaemonProc:
    """A real daemon with `engine = "remote"` on the test server (its own settings and dirs, nothing of yours)."""
    env = {
        **os.environ,
        **banked_env,
        "BANKED_ENGINE": "remote",
        "BANKED_REMOTE_URL": server.url,
        "BANKED_REMOTE_TOKENIZER": str(tiny_model),
        "BANKED_N_CTX": "4096",
        **more,
    }
    return DaemonProc(env, Path(banked_env["BANKED_RUNTIME_DIR"]) / "daemon.sock").start()


def test_a_daemon_on_the_remote_engine_completes_and_says_where_it_runs(
    server: ServerProc, banked_env: dict[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    d = remote_daemon(server, banked_env, tiny_model)
    try:
        root = workspace(tmp_path / "ws", 7)
        with d.client() as c:
            warm_ = c.call("warm", {"root": str(root)})
            path = root / "pkg/mod1.py"
            lines = path.read_text().split("\n")
            at = {"path": str(path), "text": "\n".join(lines), "line": 4, "col": len(lines[4]), "max_tokens": 4}
            r = c.call("complete", at)
            assert r["engine"] == "remote" and r["reused_tokens"] >= warm_["tokens"]
            lines[4] += "x"  # typed on at the end of the line
            again = c.call("complete", {**at, "text": "\n".join(lines), "col": len(lines[4])})
            assert again["prefilled_tokens"] <= 2 + 16 + 8, "the server's count: what was typed and after"
            explained = c.call("explain", {"path": str(path), "start_line": 1, "end_line": 3, "max_tokens": 8})
            assert explained["engine"] == "remote" and explained["reused_tokens"] >= warm_["tokens"]
            st = c.call("status")
        remote_ = st["engine"]["extra"]["remote"]
        assert remote_["url"] == server.url and remote_["kind"] == "llama.cpp" and remote_["reachable"]
        assert remote_["recent_reuse"] > 0.5
        env = {**d.env, "NO_COLOR": "1", "COLUMNS": "200"}
        shown = subprocess.run(
            [sys.executable, "-m", "banked.daemon", "status"], env=env, capture_output=True, text=True
        )
        assert server.url in shown.stdout and "llama.cpp" in shown.stdout and "reachable" in shown.stdout
        assert "% of prompt tokens from its cache" in shown.stdout
        doctor = subprocess.run(
            [sys.executable, "-m", "banked.daemon", "doctor"], env=env, capture_output=True, text=True
        )
        assert "remote server" in doctor.stdout and "4,096 tokens of context" in doctor.stdout
    finally:
        d.stop()


def test_with_the_local_fallback_a_dead_server_costs_one_request(
    server: ServerProc, banked_env: dict[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    d = remote_daemon(server, banked_env, tiny_model, BANKED_REMOTE_FALLBACK="local", BANKED_MODEL=str(tiny_model))
    try:
        root = workspace(tmp_path / "ws", 8)
        at = {"path": str(root / "pkg/mod1.py"), "line": 4, "col": 2, "max_tokens": 4, "reuse": False}
        with d.client() as c:
            c.call("warm", {"root": str(root)})
            assert c.call("complete", at)["engine"] == "remote"
            server.kill()
            answers = []
            for _ in range(2):
                try:
                    answers.append(c.call("complete", at)["engine"])
                except Exception as exc:  # the request under way when it went: one clear failure
                    assert "server" in str(exc) or "answer" in str(exc)
            assert answers and answers[-1] == "llamacpp", "answered by the local engine meanwhile"
            st = c.call("status")
            assert st["engine"]["extra"]["remote"]["problem"]
            assert not st["engine"]["extra"]["remote"]["reachable"]
        time.sleep(0.1)
    finally:
        d.stop()


def test_team_server_serves_the_model_and_prints_what_users_configure(
    banked_env: dict[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    from server_helpers import free_port

    port = free_port()
    env = {**os.environ, **banked_env, "NO_COLOR": "1", "BANKED_API_KEY": "team-secret-123"}
    cmd = [sys.executable, "-m", "banked.daemon", "team-server", "--model", str(tiny_model), "--parallel", "2"]
    cmd += ["--per-user", "4096", "--port", str(port), "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        printed = ""
        deadline = time.monotonic() + 60
        while "remote_fallback" not in printed and time.monotonic() < deadline:
            printed += proc.stdout.readline() if proc.stdout else ""
        assert 'engine = "remote"' in printed
        assert f'remote_url = "http://127.0.0.1:{port}"' in printed
        for _ in range(600):  # the server loads the model
            try:
                engine = make_remote(f"http://127.0.0.1:{port}", "auto", tiny_model, "team-secret-123")
                break
            except EngineError:
                time.sleep(0.1)
        assert engine.server_info.kind == "llama.cpp" and engine.server_info.slots == 2
        engine.close()
        with pytest.raises(EngineError, match="refused banked's API key"):
            make_remote(f"http://127.0.0.1:{port}", "auto", tiny_model, "wrong-key")
        key_file = Path(banked_env["BANKED_CACHE_DIR"]) / "team-server" / "api-key"
        assert key_file.read_text().strip() == "team-secret-123" and (key_file.stat().st_mode & 0o077) == 0
    finally:
        proc.terminate()
        proc.wait(60)
