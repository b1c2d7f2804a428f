"""The daemon's own cache of recent completions: what the CLI and any client without one of its own get."""

from __future__ import annotations

from pathlib import Path

from helpers import DaemonProc, make_repo
from lsp_helpers import SOURCE


def done(daemon: DaemonProc) -> int:
    with daemon.client() as c:
        return int(c.call("status")["jobs"].get("complete.done", 0))


def test_a_retyped_or_typed_through_completion_needs_no_model_call(daemon: DaemonProc, tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"geometry.py": SOURCE})
    path = str(ws / "geometry.py")
    at = {"path": path, "line": 8, "col": 11, "max_tokens": 12}
    with daemon.client() as c:
        first = c.call("complete", at)
        assert not first["cached"] and first["text"].strip(), "the tiny model gave no suggestion here"
        calls = done(daemon)
        again = c.call("complete", at)  # asked again (a retype, an undo, a second client)
        assert again["cached"] and again["text"] == first["text"]
        lines = SOURCE.split("\n")
        typed = first["text"][:2]  # the user types the first two characters of the suggestion
        lines[8] = lines[8][:11] + typed + lines[8][11:]
        through = c.call("complete", {**at, "text": "\n".join(lines), "col": 11 + len(typed)})
        assert through["cached"] and through["text"] == first["text"][2:]  # the rest of it, at once
        assert done(daemon) == calls  # neither needed the model
        lines[8] = lines[8][:11] + "\u00a7" + lines[8][11:]  # typed something the suggestion did not have
        other = c.call("complete", {**at, "text": "\n".join(lines), "col": 12})
        assert not other["cached"]  # never a suggestion that no longer fits
        fresh = c.call("complete", {**at, "reuse": False})
        assert not fresh["cached"] and done(daemon) == calls + 2
