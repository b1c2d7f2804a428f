"""What the model may see: rules on disk, symlinks, and live updates from the file system."""

from __future__ import annotations

import os
from pathlib import Path

from banked.daemon.config import Config
from banked.daemon.context.templates import template_for
from banked.daemon.context.workspace import Rules, Workspace
from banked.daemon.context.wscache import WorkspaceCache
from banked.daemon.engines.llamacpp import LlamaCppEngine
from helpers import DaemonProc, make_files, wait_for


def scan(root: Path, **rules: object) -> Workspace:
    ws = Workspace(root, Rules(**rules))  # type: ignore[arg-type]
    ws.scan()
    return ws


def test_gitignore_at_every_level_and_default_excludes(tmp_path: Path) -> None:
    make_files(
        tmp_path,
        {
            ".gitignore": "*.log\n/generated/\n",
            "src/.gitignore": "local_*.py\n!local_keep.py\n",
            "src/app.py": "print('app')\n",
            "src/local_x.py": "x = 1\n",
            "src/local_keep.py": "keep = 1\n",
            "debug.log": "noise\n",
            "generated/out.py": "gen = 1\n",
            "node_modules/lib/index.js": "module.exports = 1\n",
            ".venv/lib/site.py": "v = 1\n",
            ".git/config": "[core]\n",
            "build/x.py": "b = 1\n",
            "pkg/__pycache__/m.cpython-311.pyc": b"\x00\x01",
        },
    )
    assert sorted(scan(tmp_path).files) == [".gitignore", "src/.gitignore", "src/app.py", "src/local_keep.py"]


def test_secrets_are_skipped_unless_asked(tmp_path: Path) -> None:
    make_files(
        tmp_path,
        {
            ".env": "API_KEY=hunter2\n",
            ".env.production": "X=1\n",
            "certs/server.pem": "-----BEGIN\n",
            "certs/server.key": "k\n",
            "home/.ssh/id_rsa": "PRIVATE\n",
            "home/.ssh/id_ed25519.pub": "ssh-ed25519\n",
            "main.py": "import os\n",
        },
    )
    assert sorted(scan(tmp_path).files) == ["main.py"]
    assert ".env" in scan(tmp_path, include_secrets=True).files


def test_binary_non_utf8_and_huge_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    make_files(
        tmp_path,
        {
            "image.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            "latin1.txt": "caf\xe9\n".encode("latin-1"),
            "huge.py": "x = 1\n" * 100_000,
            "ok.py": "y = 2\n",
            "unicode.py": "name = 'café ☕'\n",
        },
    )
    ws = scan(tmp_path)
    assert sorted(ws.files) == ["ok.py", "unicode.py"]
    assert ws.skipped["image.png"] == "binary"
    assert ws.skipped["latin1.txt"] == "not UTF-8"
    assert ws.skipped["huge.py"].startswith("larger than")


def test_symlinks_never_lead_outside_the_root(tmp_path: Path) -> None:
    outside = make_files(tmp_path / "outside", {"secret.py": "TOKEN = 'x'\n", "dir/a.py": "a = 1\n"})
    root = make_files(tmp_path / "root", {"real.py": "r = 1\n"})
    os.symlink(outside / "secret.py", root / "escape.py")
    os.symlink(outside / "dir", root / "escape_dir")
    os.symlink(root / "real.py", root / "alias.py")
    os.symlink(root, root / "loop")
    ws = scan(root)
    assert sorted(ws.files) == ["alias.py", "real.py"]
    assert ws.skipped["escape.py"] == "symlink outside the workspace"
    assert all("TOKEN" not in f.text for f in ws.files.values())
    # A file swapped for an outside symlink after the scan is refused on re-read too.
    (root / "real.py").unlink()
    os.symlink(outside / "secret.py", root / "real.py")
    ws.refresh({"real.py"})
    assert "real.py" not in ws.files


def test_file_deleted_during_prefill(tmp_path: Path, cfg: Config, engine: LlamaCppEngine) -> None:
    root = make_files(tmp_path / "ws", {f"m{i}.py": f"def f{i}(x):\n    return x * {i}\n" * 20 for i in range(10)})
    ws = Workspace(root)
    ws.scan()
    wc = WorkspaceCache(ws, engine, template_for(engine), cfg)
    victim = "m9.py"
    seen = {"n": 0}

    def stop_after_a_few() -> bool:
        seen["n"] += 1
        if seen["n"] == 2:
            (root / victim).unlink()  # deleted while its tokens are being prefilled
        return False

    wc.sync(stop_after_a_few)
    assert wc.synced  # the sync finished on what was read; the deletion comes as an event
    assert ws.refresh({victim}) == {victim}
    wc.invalidate()
    wc.sync()
    assert wc.synced
    assert victim not in [s.path for s in wc.plan().segments]


def workspace_status(d: DaemonProc, root: Path) -> dict:  # type: ignore[type-arg]
    with d.client() as c:
        st = c.call("status")
    return next(w for w in st["workspaces"] if w["root"] == str(root)) | {"cached": st["cached_tokens"]}


def test_watcher_picks_up_an_external_edit(daemon: DaemonProc, tmp_path: Path) -> None:
    root = make_files(tmp_path / "ws", {"a.py": "def a():\n    return 1\n", "b.py": "B = 2\n"})
    with daemon.client() as c:
        first = c.call("warm", {"root": str(root)})
    (root / "b.py").write_text("B = 2\nC = 3  # added by another editor\n")
    (root / "new.py").write_text("N = 4\n")
    assert wait_for(lambda: workspace_status(daemon, root)["files"] == 3)
    # The background sync re-prefills without being asked: the cache grows to the new plan.
    assert wait_for(
        lambda: (w := workspace_status(daemon, root))["tokens"] == w["cached"] and w["tokens"] > first["tokens"]
    )
    (root / "new.py").unlink()
    assert wait_for(lambda: workspace_status(daemon, root)["files"] == 2)


def test_git_checkout_of_many_files_is_one_batch(daemon: DaemonProc, tmp_path: Path) -> None:
    root = make_files(tmp_path / "ws", {f"pkg/m{i:03d}.py": f"VALUE_{i} = {i}\n" for i in range(200)})
    with daemon.client() as c:
        c.call("warm", {"root": str(root)})
    # What `git checkout other-branch` does: rewrite many files, delete some, add some, at once.
    for i in range(0, 200, 2):
        (root / f"pkg/m{i:03d}.py").write_text(f"VALUE_{i} = {i * 10}  # other branch\n")
    for i in range(1, 40, 2):
        (root / f"pkg/m{i:03d}.py").unlink()
    for i in range(20):
        (root / f"pkg/new{i}.py").write_text(f"NEW_{i} = True\n")

    def batches() -> list[int]:
        return [int(ln.split(": ")[-1].split()[0]) for ln in daemon.log().splitlines() if "changed on disk" in ln]

    assert wait_for(lambda: sum(batches()) >= 140), daemon.log()  # 100 rewritten, 20 deleted, 20 new
    assert len(batches()) <= 3, batches()  # coalesced: one re-plan, not one per file
    with daemon.client() as c:
        w = c.call("warm", {"root": str(root)})
    assert w["files"] == 200
    assert workspace_status(daemon, root)["cached"] >= w["tokens"]
