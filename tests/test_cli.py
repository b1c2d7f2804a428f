"""The `banked` command end to end: it starts a real daemon in the background and talks to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from banked.daemon.cli.main import parse_location, parse_range
from banked.daemon.ipc.client import daemon_alive
from banked.daemon.ipc.protocol import replace_lines
from helpers import make_files, make_repo


@pytest.fixture
def cli(banked_env: dict[str, str]) -> Iterator:  # type: ignore[type-arg]
    env = {**os.environ, **banked_env}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [sys.executable, "-m", "banked.daemon", *args], env=env, capture_output=True, text=True, timeout=120
        )
        if check:
            assert out.returncode == 0, out.stderr
        return out

    yield run
    run("stop", check=False)


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    return make_repo(
        tmp_path / "proj",
        {
            "geometry.py": "import math\n\n\ndef circle_perimeter(r):\n    return \n",
            "units.py": "def to_cm(m):\n    return m * 100\n\n\ndef to_mm(m):\n    return m * 1000\n",
        },
    )


def test_warm_complete_status_stop(cli, sample: Path) -> None:  # type: ignore[no-untyped-def]
    w = json.loads(cli("warm", str(sample), "--json").stdout)  # auto-starts the daemon
    assert w["files"] == 2 and w["tokens"] > 0 and w["prefilled_tokens"] == w["tokens"]
    assert w["seconds"] >= 0
    r = json.loads(cli("complete", f"{sample}/geometry.py:5:12", "--json", "--max-tokens", "5").stdout)
    for key in (
        "text",
        "reused_tokens",
        "prefilled_tokens",
        "generated_tokens",
        "ttft_ms",
        "total_ms",
        "engine",
        "model",
    ):
        assert key in r
    assert r["engine"] == "llamacpp" and r["model"] == "tiny-qwen2-test"
    assert r["workspace"] == str(sample)  # the warmed root, remembered
    assert r["reused_tokens"] >= w["tokens"]  # the whole workspace came from the cache
    assert r["generated_tokens"] <= 5
    st = json.loads(cli("status", "--json").stdout)
    assert st["running"] and st["engine"]["name"] == "llamacpp"
    assert st["workspaces"][0]["root"] == str(sample) and st["capacity"] == 8192
    human = cli("status").stdout
    assert "llamacpp" in human and str(sample) in human
    assert f"a request's own {st['engine']['extra']['request_chunk']}" in human  # the step a request takes
    assert "stopped" in cli("stop").stdout
    assert not daemon_alive()  # `stop` returns once the snapshot is written and the lock is free
    assert json.loads(cli("status", "--json", check=False).stdout) == {"running": False}


def test_workspace_is_remembered_across_restarts(cli, sample: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    nested = make_files(sample / "sub", {"inner.py": "x = 1\n"})
    cli("warm", str(sample))
    cli("stop")
    r = json.loads(cli("complete", f"{nested}/inner.py:1:5", "--json", "--max-tokens", "2").stdout)
    assert r["workspace"] == str(sample)
    # Outside every warmed root: the git root, else the file's folder.
    repo = make_files(tmp_path / "repo", {".git/HEAD": "ref: refs/heads/main\n", "src/a.py": "a = 1\n"})
    r = json.loads(cli("complete", f"{repo}/src/a.py:1:3", "--json", "--max-tokens", "2").stdout)
    assert r["workspace"] == str(repo)
    r = json.loads(
        cli("complete", f"{repo}/src/a.py:1:3", "--json", "--max-tokens", "2", "--workspace", str(repo / "src")).stdout
    )
    assert r["workspace"] == str(repo / "src")


def test_explain_streams_text(cli, sample: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli("explain", f"{sample}/units.py:1-2", "--json")
    r = json.loads(out.stdout)
    assert r["path"] == "units.py" and r["start_line"] == 1 and r["end_line"] == 2
    assert r["generated_tokens"] > 0
    plain = cli("explain", f"{sample}/units.py")
    assert plain.stdout.strip()


def test_refactor_prints_a_diff_and_applies_atomically(cli, sample: Path) -> None:  # type: ignore[no-untyped-def]
    (sample / "units.py").write_bytes((sample / "units.py").read_bytes().replace(b"\n", b"\r\n"))
    before = (sample / "units.py").read_bytes().decode()
    out = cli("refactor", f"{sample}/units.py:1-2", "rename to to_centimetres")
    assert out.stdout.startswith("--- a/units.py\n+++ b/units.py\n") or out.stdout.strip() == "(no change)"
    assert (sample / "units.py").read_bytes().decode() == before  # no --apply: untouched
    r = json.loads(cli("refactor", f"{sample}/units.py:1-2", "rename", "--json", "--apply").stdout)
    after = (sample / "units.py").read_bytes().decode()
    assert after == replace_lines(before, 1, 2, r["replacement"])
    assert after.endswith("def to_mm(m):\r\n    return m * 1000\r\n")  # untouched lines keep their CRLF
    assert not [p for p in sample.iterdir() if p.name.endswith(".banked")]  # no temp file left


def test_refactor_refuses_if_the_file_changed(
    cli, sample: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    """The user's edit lands after the daemon read the file and before the CLI writes: nothing is written."""
    from banked.daemon.cli import commands
    from banked.daemon.cli.main import main

    target = sample / "units.py"
    cli("warm", str(sample))
    real_call = commands.stream_call
    edited: list[str] = []

    def user_edits_meanwhile(*args: Any, **kwargs: Any) -> Any:
        res = real_call(*args, **kwargs)  # the real daemon has read and rewritten the range
        target.write_text("# changed by the user meanwhile\n" + target.read_text())
        edited.append(target.read_text())
        return res

    monkeypatch.setattr(commands, "stream_call", user_edits_meanwhile)
    with pytest.raises(SystemExit) as exit_:
        main(["refactor", f"{target}:1-2", "x", "--apply"])
    assert exit_.value.code == 2
    assert "changed while the refactor ran" in capsys.readouterr().err
    assert edited and target.read_text() == edited[0]  # the user's edit stands; nothing was written over it


def test_bad_locations_are_clear_errors(cli, sample: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli("complete", f"{sample}/geometry.py", check=False)
    assert out.returncode == 2 and "FILE:LINE:COL" in out.stderr
    out = cli("complete", f"{sample}/missing.py:1:1", check=False)
    assert out.returncode == 1 and "does not exist" in out.stderr
    out = cli("refactor", f"{sample}/units.py:3-1", "x", check=False)
    assert out.returncode == 2 and "START <= END" in out.stderr


def test_parsers() -> None:
    assert parse_location("/a/b.py:3:7") == (Path("/a/b.py"), 3, 7)
    assert parse_range("/a/b.py:2-9", required=True) == (Path("/a/b.py"), 2, 9)
    assert parse_range("/a/b.py", required=False) == (Path("/a/b.py"), None, None)
    assert replace_lines("a\nb\nc\n", 2, 2, "B1\nB2") == "a\nB1\nB2\nc\n"
    assert replace_lines("a\r\nb\r\nc\r\n", 2, 2, "B1\nB2\n") == "a\r\nB1\r\nB2\r\nc\r\n"


def test_version_and_every_argument_is_described() -> None:
    from banked.daemon import __version__
    from banked.daemon.cli.main import build_parser

    out = subprocess.run([sys.executable, "-m", "banked.daemon", "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"banked {__version__}"

    def walk(p: Any) -> Iterator[Any]:
        yield p
        for a in p._actions:
            if a.choices and isinstance(a.choices, dict):
                for sub in a.choices.values():
                    yield from walk(sub)

    for parser in walk(build_parser()):
        for a in parser._actions:
            assert a.help, f"`{parser.prog}`: {a.option_strings or a.dest} has no description"


def test_locations_count_from_one_and_out_of_range_is_said(cli, sample: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli("complete", f"{sample}/geometry.py:0:1", check=False)
    assert out.returncode == 2 and "count from 1" in out.stderr and "0-based" not in out.stderr
    out = cli("complete", f"{sample}/geometry.py:99:1", check=False)
    assert out.returncode == 1 and "line 99 is past the end of geometry.py (6 lines)" in " ".join(out.stderr.split())
    out = cli("complete", f"{sample}/geometry.py:4:99", check=False)
    assert out.returncode == 1 and "column 99 is past the end of line 4" in " ".join(out.stderr.split())
    out = cli("complete", f"{sample}:1:1", check=False)
    assert out.returncode == 2 and "is a directory" in " ".join(out.stderr.split())


def test_explain_a_line_takes_the_definition_around_it(cli, sample: Path) -> None:  # type: ignore[no-untyped-def]
    r = json.loads(cli("explain", f"{sample}/units.py:6", "--json").stdout)
    assert (r["start_line"], r["end_line"]) == (5, 6)  # def to_mm(m): / return m * 1000


def test_a_file_in_no_workspace_is_refused_not_adopted(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    loose = make_files(tmp_path / "etc-like", {"passwd": "root:x:0:0::/root:/bin/sh\n"})
    out = cli("explain", f"{loose}/passwd:1-1", check=False)
    assert out.returncode == 1 and "no workspace banked knows" in " ".join(out.stderr.split())
    st = json.loads(cli("status", "--json").stdout)
    assert st["workspaces"] == [] and st["known_roots"] == []


def test_status_without_a_daemon_and_doctor(cli) -> None:  # type: ignore[no-untyped-def]
    out = cli("status", check=False)
    assert out.returncode == 1 and "banked serve" not in out.stdout and "starts one" in " ".join(out.stdout.split())
    checks = {c["name"]: c for c in json.loads(cli("doctor", "--json").stdout)}
    assert checks["language server"]["status"] == "ok" and "banked-lsp" in checks["language server"]["detail"]
    assert checks["engine and model"]["status"] == "ok" and "tiny" in checks["engine and model"]["detail"]
    assert checks["daemon"]["detail"].startswith("not running")
    human = cli("doctor").stdout
    assert "ok" in human and "config" in human


def test_a_setting_for_one_command_is_explained(cli, sample: Path, banked_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    cli("warm", str(sample))
    env = {**os.environ, **banked_env, "BANKED_MAX_LINES": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "banked.daemon", "complete", f"{sample}/geometry.py:5:12", "--max-lines", "1"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0
    assert "BANKED_MAX_LINES is read when the daemon starts" in " ".join(out.stderr.split())


def test_a_daemon_dying_mid_request_is_a_message_not_a_traceback(cli, sample: Path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "BANKED_CHAT_MAX_TOKENS": "3000"}  # a long explanation, still running when killed
    subprocess.run([sys.executable, "-m", "banked.daemon", "warm", str(sample)], env=env, check=True, timeout=120)
    pid = json.loads(cli("status", "--json").stdout)["pid"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "banked.daemon", "explain", f"{sample}/units.py"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.read(1)  # the explanation is streaming
    os.kill(pid, signal.SIGKILL)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode in (1, 2) and "Traceback" not in err
    assert "closed the connection" in " ".join(err.split())
