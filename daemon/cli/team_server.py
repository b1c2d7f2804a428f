"""`banked team-server`: one command for a team lead: llama.cpp's server with banked's model, ready for N users.

It builds `llama-server` from the pinned sources if there is none yet (engines/llama_server.py), starts it
with the embedded default model (or `--model`), `--parallel N` slots that each hold a user's whole workspace
(`--kv-unified-per-slot`), a directory for slots saved to disk (`--slot-save-path`: a user whose slot was
taken, or a restarted server, gets the workspace back from there) and an API key, then prints the lines each
user puts in their config. It runs in the foreground; stop it with Ctrl+C.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
from pathlib import Path

from banked.daemon import paths
from banked.daemon.cli.console import err, out
from banked.daemon.engines import llama_server, model_store


def server_command(
    binary: Path,
    model: Path,
    host: str,
    port: int,
    parallel: int,
    per_user: int,
    save_dir: Path,
    key_file: Path | None,
    threads: int = 0,
) -> list[str]:
    """The `llama-server` command line for `parallel` users with `per_user` tokens of context each."""
    cmd = [
        str(binary),
        "--model", str(model),
        "--host", host,
        "--port", str(port),
        "--parallel", str(parallel),
        "--kv-unified-per-slot", str(per_user),  # one shared pool, each slot up to a whole workspace
        "--ctx-size", str(parallel * per_user),
        "--slot-save-path", str(save_dir),
        "--cache-reuse", "0",  # a prefix is reused as it is, never shifted: banked sends the same prefix
        "--no-context-shift",  # a full slot is an error banked sees, not silently dropped history
        "--slots",
    ]  # fmt: skip
    if threads:
        cmd += ["--threads", str(threads)]
    if key_file is not None:
        cmd += ["--api-key-file", str(key_file)]
    return cmd


def user_config(url: str, key_env: str) -> str:
    return (
        "# ~/.config/banked/config.toml of each user\n"
        'engine = "remote"\n'
        f'remote_url = "{url}"\n'
        f'remote_api_key_env = "{key_env}"   # export {key_env}=<the key below> in the user\'s shell\n'
        'remote_fallback = "local"          # answer on the laptop while the server is away\n'
    )


def key_file_for(save_dir: Path, key: str | None) -> tuple[Path, str]:
    """The API key in a file only its owner reads (llama-server's --api-key-file); a new one unless given."""
    f = paths.private_file(save_dir.parent / "api-key")
    value = key or (f.read_text().strip() if f.exists() and f.read_text().strip() else secrets.token_urlsafe(24))
    f.write_text(value + "\n")
    return f, value


def cmd_team_server(args: argparse.Namespace) -> int:
    binary = llama_server.find()
    if binary is None:
        with err.status("building llama-server from the pinned llama.cpp sources (about 15 min on 2 cores)…"):
            binary = llama_server.build(say=lambda m: err.print(m))
    model = Path(args.model).expanduser() if args.model else model_store.ensure_default_model()
    base = paths.private_dir(paths.cache_dir() / "team-server")
    save_dir = paths.private_dir(base / "slots")
    key_file, key = (None, None) if args.no_key else key_file_for(save_dir, os.environ.get(args.key_env))
    host = args.host
    shown_host = socket.gethostname() if host in ("0.0.0.0", "::") else host
    scheme = "http" if host in ("127.0.0.1", "localhost", "::1") else "https"
    url = f"{scheme}://{shown_host}:{args.port}"
    cmd = server_command(binary, model, host, args.port, args.parallel, args.per_user, save_dir, key_file, args.threads)
    out.print(f"[bold]banked team-server[/]: {args.parallel} users × {args.per_user:,} tokens on {model.name}")
    out.print(" ".join(cmd), soft_wrap=True)
    if scheme == "https":
        out.print(
            "[yellow]users connect with https[/]: put a TLS proxy (caddy, nginx) in front of this port, "
            "or, on a network you trust, add remote_insecure = true and use http://"
        )
    out.print(user_config(url, args.key_env))
    if key is not None:
        out.print(f"the API key (also in {key_file}): {key}")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        return proc.wait()
