"""Syntax-aware behaviour through a real daemon: completion shape, the code at the cursor, refactor validation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from banked.daemon.ipc.rpc import RemoteError
from helpers import DaemonProc, make_repo

SOURCE = "import math\n\n\ndef area(r):\n    return math.pi * r * r\n\n\ndef scale(shape, k):\n    if k > 1:\n"


@pytest.fixture
def validating(banked_env: dict[str, str]) -> Iterator[DaemonProc]:
    env = {**os.environ, **banked_env, "BANKED_VALIDATE_REFACTORS": "1"}
    d = DaemonProc(env, Path(banked_env["BANKED_RUNTIME_DIR"]) / "daemon.sock").start()
    yield d
    d.stop()


def test_completion_shape_follows_the_syntax_at_the_cursor(daemon: DaemonProc, tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"geo.py": SOURCE})
    f = str(ws / "geo.py")
    with daemon.client() as c:
        opener = c.call("complete", {"path": f, "line": 8, "col": 13})  # after "if k > 1:"
        assert opener["decision"].startswith("after a block opener")
        args = c.call("complete", {"path": f, "text": SOURCE + "        print(k, ", "line": 9, "col": 17})
        assert args["decision"].startswith("inside an open argument list")
        assert "\n" not in args["text"]
        plain = c.call("complete", {"path": f, "line": 4, "col": 11})
        assert plain["decision"] == "text before the cursor: finish the line"


def test_explain_without_a_selection_takes_the_enclosing_definition(daemon: DaemonProc, tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"geo.py": SOURCE + "        return k\n    return shape\n"})
    with daemon.client() as c:
        r = c.call("explain", {"path": str(ws / "geo.py"), "cursor_line": 8, "max_tokens": 4})
    assert (r["start_line"], r["end_line"]) == (8, 11)  # def scale(...) through its last line


def test_a_rewrite_that_does_not_parse_is_retried_once_then_refused(validating: DaemonProc, tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"geo.py": SOURCE + "        return k\n"})
    before = (ws / "geo.py").read_text()
    with validating.client() as c:
        with pytest.raises(RemoteError, match=r"wrong twice \(it does not parse .*\); nothing was changed"):
            c.call("refactor", {"path": str(ws / "geo.py"), "start_line": 4, "end_line": 5, "instruction": "tidy"})
        jobs = c.call("status")["jobs"]
    assert jobs.get("chat.done") == 2  # the first answer and one retry
    assert (ws / "geo.py").read_text() == before


def test_a_python_rewrite_that_uses_names_it_never_imports_is_a_problem() -> None:
    """The refactor seen in the field: `Callable`/`Mapping` in annotations, nothing imported (NameError)."""
    from types import SimpleNamespace
    from typing import Any, cast

    from banked.daemon.serving.chat import Turn, rewrite_problems

    text = "import os\n\n\ndef apply(fn, table):\n    return {k: fn(v) for k, v in table.items()}\n"
    turn = Turn(cast(Any, None), cast(Any, SimpleNamespace(rel="m.py")), text, 4, 5, "")
    typed = "def apply(fn: Callable[[int], int], table: Mapping[str, int]) -> dict[str, int]:\n"
    body = "    return {k: fn(v) for k, v in table.items()}\n"
    assert rewrite_problems(turn, typed + body, validate=True) == [
        "line 4 uses `Callable`, defined nowhere",
        "line 4 uses `Mapping`, defined nowhere",
    ]
    imported = "from typing import Callable, Mapping\n" + typed + body
    assert rewrite_problems(turn, imported, validate=True) == []
    # A name the file already left undefined (a star import, a run-time global) is not the rewrite's fault.
    star = Turn(cast(Any, None), cast(Any, SimpleNamespace(rel="m.py")), "def f():\n    return CONFIG\n", 1, 2, "")
    assert rewrite_problems(star, "def f():\n    return CONFIG or {}\n", validate=True) == []
    assert rewrite_problems(turn, typed + body, validate=False) == []
