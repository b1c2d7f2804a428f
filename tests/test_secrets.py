"""Secrets never reach a prompt, the cache or a snapshot: the deny list by name, detection by content,
`.bankedignore`, redaction of the text around a cursor, and refusals through a real daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
from banked.daemon.config import Config
from banked.daemon.context import secrets
from banked.daemon.context.cursor import Cursor
from banked.daemon.context.templates import template_for
from banked.daemon.context.workspace import Rules, Workspace
from banked.daemon.context.wscache import WorkspaceCache
from banked.daemon.engines.llamacpp import LlamaCppEngine
from banked.daemon.ipc import rpc
from helpers import DaemonProc, make_files

AWS_KEY = "AKIA" + "ABCDEFGHIJKLMNOP"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"

BY_NAME = {
    ".aws/credentials": "[default]\naws_access_key_id = x\n",
    "secrets.json": '{"db": "pw"}\n',
    "config/secrets.yaml": "db: pw\n",
    ".npmrc": "//registry.npmjs.org/:_authToken=abc\n",
    ".git-credentials": "https://user:pw@github.com\n",
    ".envrc": "export TOKEN=1\n",
    ".env": "API_KEY=hunter2\n",
    ".env.production": "X=1\n",
    "deploy/prod.env": "X=1\n",
    ".docker/config.json": '{"auths": {}}\n',
    ".kube/config": "apiVersion: v1\n",
    ".pypirc": "[pypi]\npassword = x\n",
    "infra/terraform.tfstate": "{}\n",
    ".vault-token": "s.abc\n",
    ".bash_history": "export PASSWORD=x\n",
    "etc/ssh/ssh_host_ed25519_key": "k\n",
    "etc/shadow": "root:$6$x:19000::::::\n",
    "certs/server.pem": "-----BEGIN CERTIFICATE-----\n",
    "home/.ssh/id_rsa": "PRIVATE\n",
    ".netrc": "machine x login y password z\n",
}
BY_CONTENT = {
    "settings.py": f"AWS_ACCESS_KEY_ID = '{AWS_KEY}'\n",
    "ci.py": f"TOKEN = '{GITHUB_TOKEN}'\n",
    "deploy_key.txt": PRIVATE_KEY,
    "notes.md": "slack: xoxb-" + "123456789012-abcdefghijkl\n",
}
KEPT = {
    "main.py": "import os\n",
    "secrets.py": "import hmac\n",  # a module named like the stdlib's, not a secrets file
    "auth/credentials.py": "class Credentials:\n    pass\n",
    "keys.py": "KEYS = ['a', 'b']\n",
}


def test_the_deny_list_and_content_detection(tmp_path: Path) -> None:
    ws = Workspace(make_files(tmp_path, {**BY_NAME, **BY_CONTENT, **KEPT}))
    ws.scan()
    assert sorted(ws.files) == sorted(KEPT)
    for rel in BY_CONTENT:
        assert ws.skipped[rel].startswith("contains "), rel
    assert ws.skipped["ci.py"] == "contains a GitHub token"
    assert all(ws.is_secret(rel) for rel in BY_NAME)
    assert not any(ws.is_secret(rel) for rel in KEPT)


def test_include_secrets_and_extra_secrets(tmp_path: Path) -> None:
    make_files(tmp_path, {".env": "A=1\n", "vault/db.txt": "pw\n", "main.py": "x = 1\n"})
    ws = Workspace(tmp_path, Rules(include_secrets=True))
    ws.scan()
    assert ".env" in ws.files
    ws = Workspace(tmp_path, Rules(extra_secrets=["vault/"]))
    ws.scan()
    assert sorted(ws.files) == ["main.py"] and ws.is_secret("vault/db.txt")


def test_bankedignore_works_like_gitignore_at_every_level(tmp_path: Path) -> None:
    make_files(
        tmp_path,
        {
            ".bankedignore": "fixtures/\n*.sql\n",
            "src/.bankedignore": "generated_*.py\n!generated_keep.py\n",
            "src/app.py": "x = 1\n",
            "src/generated_a.py": "y = 1\n",
            "src/generated_keep.py": "z = 1\n",
            "fixtures/data.py": "d = 1\n",
            "dump.sql": "select 1;\n",
        },
    )
    ws = Workspace(tmp_path)
    ws.scan()
    assert sorted(ws.files) == [".bankedignore", "src/.bankedignore", "src/app.py", "src/generated_keep.py"]


def test_redaction_keeps_code_and_removes_secrets() -> None:
    text = f"key = '{AWS_KEY}'\nurl = 'https://bob:s3cretpw@db.example.com/x'\n{PRIVATE_KEY}def f():\n    return 1\n"
    out = secrets.redact(text)
    assert AWS_KEY not in out and "s3cretpw" not in out and "OPENSSH" not in out
    assert "def f():\n    return 1\n" in out and out.count(secrets.REDACTED) == 3


def test_the_completion_tail_never_holds_a_detected_secret(tmp_path: Path, cfg: Config, engine: LlamaCppEngine) -> None:
    ws = Workspace(make_files(tmp_path, {"a.py": "x = 1\n"}))
    ws.scan()
    wc = WorkspaceCache(ws, engine, template_for(engine), cfg)
    buffer = f"import boto3\nKEY = '{AWS_KEY}'\nclient = boto3.client(\n"
    tail = engine.detokenize(wc.fim_tail("cloud.py", Cursor.at(buffer, 2, 22))).decode()
    assert AWS_KEY not in tail and secrets.REDACTED in tail and "boto3.client(" in tail


def test_the_daemon_refuses_to_read_secret_files(daemon: DaemonProc, tmp_path: Path) -> None:
    root = make_files(tmp_path / "ws", {".env": "API_KEY=hunter2\n", "main.py": "import os\n"})
    with daemon.client() as c:
        w = c.call("warm", {"root": str(root)})
        assert w["files"] == 1  # main.py only
        for method, extra in (("complete", {"line": 0, "col": 3}), ("explain", {})):
            with pytest.raises(rpc.RemoteError, match="deny list"):
                c.call(method, {"path": str(root / ".env"), **extra})
            with pytest.raises(rpc.RemoteError, match="deny list"):
                c.call(method, {"path": str(root / ".env"), "text": "API_KEY=hunter2\n", **extra})
