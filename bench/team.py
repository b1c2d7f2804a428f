"""A team on one server: N users, each a real daemon with its own workspace, against llama.cpp's server.

    python bench/team.py --source DIR [--source DIR2 ...] [--users 4] [--workspace-tokens 8000] [--edits 6]
        [--json bench/results/team.json]

One `llama-server` (built from the pinned sources, as `banked team-server` starts it) with the embedded
model and a slot per user. Each user is a real daemon (`engine = "remote"`) warmed on a workspace cut from a
package nobody here wrote (its files until about `--workspace-tokens`). Then the users take turns editing
their hot file at the end of a line and asking for a completion there (round robin, so every turn another
user's request has run on the server since: the slots must keep each user's workspace). Per user: hot-edit
TTFT and the server's own count of prompt tokens it computed per completion.

Side by side in the same run, on the same server and prompts:
- **stateless**: the whole prompt (the same workspace and tail, token ids) with `cache_prompt` off, as a
  client that sends everything each time (a slot of its own);
- **snippets**: a Continue-style text prompt (the file's window around the cursor and ~1,000 tokens of
  snippets from other files, chosen per request) with the server's cache on (a slot of its own).
Then the eviction costs: a user's slot taken by another, and a restarted server, restored from the server's
disk (`--slot-save-path`) against a full re-prefill.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from banked.daemon import paths
from banked.daemon.engines import model_store
from common import Daemon, report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server_helpers import ServerProc  # the tests' server process: the same command line


def cut_workspace(source: Path, dest: Path, tokens: int) -> Path:
    """The package's Python files (no tests), in name order, until about `tokens` tokens (3.2 chars each)."""
    budget = tokens * 3.2
    dest.mkdir(parents=True)
    for p in sorted(source.rglob("*.py")):
        if {"tests", "test", "__pycache__"} & set(p.relative_to(source).parts):
            continue
        text = p.read_text(errors="replace")
        if len(text) > budget:
            continue
        out = dest / p.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        budget -= len(text)
        if budget < 2000:
            break
    (dest / ".git").mkdir()
    return dest


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=3600) as r:
        return dict(json.loads(r.read()))


class User:
    """One user: a daemon on the remote engine, a workspace, and a line they type on."""

    def __init__(self, i: int, root: Path, tmp: Path, server: ServerProc, model: Path, n_ctx: int):
        self.i, self.root = i, root
        self.env = {
            **paths.isolated_env(tmp / f"user{i}"),
            "BANKED_ENGINE": "remote",
            "BANKED_REMOTE_URL": server.url,
            "BANKED_REMOTE_SLOT": str(i),
            "BANKED_N_CTX": str(n_ctx),
            "BANKED_REMOTE_TOKENIZER": str(model),  # the served model's vocabulary
            "BANKED_SNAPSHOT_IDLE_S": "1",
        }
        self.daemon = Daemon(self.env).start()
        files = sorted(p for p in root.rglob("*.py") if p.stat().st_size > 2000)
        self.file = files[-1] if files else sorted(root.rglob("*.py"))[-1]
        lines = self.file.read_text().split("\n")
        self.line = next((k for k in range(len(lines) // 2, len(lines)) if lines[k].strip()), len(lines) - 1)
        self.lines = lines
        self.rows: list[dict[str, Any]] = []

    def warm(self) -> dict[str, Any]:
        return dict(self.daemon.call("warm", {"root": str(self.root)}))

    def edit_and_complete(self, ch: str) -> dict[str, Any]:
        self.lines[self.line] += ch
        params = {
            "path": str(self.file),
            "text": "\n".join(self.lines),
            "line": self.line,
            "col": len(self.lines[self.line]),
            "max_tokens": 16,
            "reuse": False,
        }
        t0 = time.perf_counter()
        r = self.daemon.call("complete", params)
        r["wall_ms"] = 1000 * (time.perf_counter() - t0)
        return dict(r)


def prompt_ids(user: User, server: ServerProc, model: Path, n_ctx: int) -> list[int]:
    """The prompt banked sent for the user's last completion, rebuilt with the same code (for the stateless
    client): the plan's ids and the same FIM tail, tokenized by a remote engine's local vocabulary."""
    from banked.daemon.config import Config
    from banked.daemon.context.cursor import Cursor
    from banked.daemon.context.templates import template_for
    from banked.daemon.context.workspace import Workspace
    from banked.daemon.context.wscache import WorkspaceCache
    from banked.daemon.engines.remote import make_remote

    engine = make_remote(server.url, "llama.cpp", model, None, n_ctx=n_ctx)
    wc = WorkspaceCache(Workspace(user.root), engine, template_for(engine), Config(n_ctx=n_ctx))
    wc.ws.scan()
    text = "\n".join(user.lines)
    rel = user.file.relative_to(user.root).as_posix()
    ids = wc.plan().ids + wc.fim_tail(rel, Cursor.at(text, user.line, len(user.lines[user.line])), 16)
    engine.close()
    return ids


def snippets_prompt(user: User, rng: random.Random) -> str:
    """A Continue-style FIM text prompt: ~1,000 tokens of other files' windows (different ones each time, as
    retrieval follows the cursor), then the current file's window around the cursor."""
    others = [p for p in user.root.rglob("*.py") if p != user.file]
    chunks, size = [], 0
    for p in rng.sample(others, min(len(others), 6)):
        lines = p.read_text().split("\n")
        at = rng.randrange(max(1, len(lines) - 40))
        w = "\n".join(lines[at : at + 40])[:1200]
        chunks.append(f"<|file_sep|>{p.relative_to(user.root)}\n{w}\n")
        size += len(w)
        if size > 3200:
            break
    before = "\n".join([*user.lines[max(0, user.line - 40) : user.line], user.lines[user.line]])
    after = "\n".join(user.lines[user.line + 1 : user.line + 10])
    rel = user.file.relative_to(user.root)
    return "".join(chunks) + f"<|file_sep|>{rel}\n<|fim_prefix|>{before}<|fim_suffix|>{after}<|fim_middle|>"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append", required=True, help="package directories (users take them in turn)")
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--workspace-tokens", type=int, default=8000)
    p.add_argument("--edits", type=int, default=6, help="hot-edit completions per user")
    p.add_argument("--baseline-requests", type=int, default=1, help="stateless and snippets requests per user")
    p.add_argument("--model", help="a GGUF file (default: the embedded model)")
    p.add_argument("--json", default="bench/results/team.json")
    args = p.parse_args()
    model = Path(args.model) if args.model else model_store.ensure_default_model()
    tmp = Path(tempfile.mkdtemp(prefix="banked-team-"))
    n_ctx = args.workspace_tokens + 4096 + 2048
    server = ServerProc(model, tmp / "server", parallel=args.users + 2, per_slot=n_ctx)
    server.cmd += ["--threads", str(os.cpu_count() or 2)]
    server.start(timeout=300)
    rng = random.Random(0)
    users: list[User] = []
    data: dict[str, Any] = {"users": args.users, "workspace_tokens": args.workspace_tokens, "model": str(model)}
    try:
        for i in range(args.users):
            src = Path(args.source[i % len(args.source)])
            root = cut_workspace(src, tmp / f"ws{i}" / src.name, args.workspace_tokens)
            users.append(User(i, root, tmp, server, model, n_ctx))
        for u in users:
            t0 = time.perf_counter()
            w = u.warm()
            print(
                f"user {u.i}: {u.root.name}, {w['tokens']:,} tokens warmed in {time.perf_counter() - t0:.0f}s",
                flush=True,
            )
            u.rows.append({"warm_tokens": w["tokens"], "warm_s": time.perf_counter() - t0})
        hot: dict[int, list[dict[str, Any]]] = {u.i: [] for u in users}
        for k in range(args.edits):
            for u in users:  # round robin: another user's requests ran on the server since this user's last
                r = u.edit_and_complete("abcdefghij"[k % 10])
                hot[u.i].append(r)
                print(f"  user {u.i} edit {k}: ttft {r['ttft_ms']:.0f} ms, server computed {r['prefilled_tokens']}"
                      f" of {r['prefilled_tokens'] + r['reused_tokens']} prompt tokens", flush=True)  # fmt: skip
        stateless: dict[int, list[dict[str, Any]]] = {u.i: [] for u in users}
        snippets: dict[int, list[dict[str, Any]]] = {u.i: [] for u in users}
        slot_stateless, slot_snippets = args.users, args.users + 1
        for u in users:
            ids = prompt_ids(u, server, model, n_ctx)
            for _ in range(args.baseline_requests):
                body = {"prompt": ids, "n_predict": 1, "cache_prompt": False, "id_slot": slot_stateless}
                t0 = time.perf_counter()
                out = post(server.url + "/completion", {**body, "temperature": 0})
                stateless[u.i].append(
                    {"ttft_ms": 1000 * (time.perf_counter() - t0), "prefilled": out["timings"]["prompt_n"]}
                )
                print(f"  user {u.i} stateless: {stateless[u.i][-1]}", flush=True)
                t0 = time.perf_counter()
                body = {
                    "prompt": snippets_prompt(u, rng),
                    "n_predict": 1,
                    "cache_prompt": True,
                    "id_slot": slot_snippets,
                }
                out = post(server.url + "/completion", {**body, "temperature": 0})
                snippets[u.i].append(
                    {"ttft_ms": 1000 * (time.perf_counter() - t0), "prefilled": out["timings"]["prompt_n"]}
                )
                print(f"  user {u.i} snippets: {snippets[u.i][-1]}", flush=True)
        evict = eviction(users[0], server)
        data["eviction"] = evict
        rows = []
        for u in users:
            h = hot[u.i][1:] or hot[u.i]  # the first is the move to the line (a jump), the rest typing
            ttft = statistics.median(r["ttft_ms"] for r in h)
            pre = statistics.mean(r["prefilled_tokens"] for r in h)
            st = statistics.median(r["ttft_ms"] for r in stateless[u.i])
            sn = statistics.median(r["ttft_ms"] for r in snippets[u.i])
            prompt = statistics.mean(r["prefilled_tokens"] + r["reused_tokens"] for r in h)
            rows.append([u.i, u.root.name, round(prompt), ttft, pre, st, st / ttft, sn, statistics.mean(
                r["prefilled"] for r in snippets[u.i])])  # fmt: skip
        data.update({"hot": hot, "stateless": stateless, "snippets": snippets})
        report(
            f"{args.users} users on one llama-server ({model.name}), ~{args.workspace_tokens:,}-token workspaces",
            ["user", "package", "prompt tokens", "hot-edit TTFT ms", "server prefill / completion",
             "stateless TTFT ms", "stateless / hot", "snippets TTFT ms", "snippets prefill"],
            rows,
            data,
            Path(args.json),
        )  # fmt: skip
        print(f"eviction: {evict}")
    except BaseException:
        print(f"kept for a look: {tmp}", flush=True)
        raise
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        for u in users:
            u.daemon.stop()
        server.stop()


def eviction(user: User, server: ServerProc) -> dict[str, Any]:
    """What a taken slot and a restarted server cost the user: restored from the server's disk (banked), against
    the full re-prefill a client without a saved slot pays (the warm's own figure)."""
    out: dict[str, Any] = {}
    time.sleep(3)  # the idle snapshot: the server writes the user's slot to its disk
    other = [t for t in user.lines if t.strip()][:200]
    post(server.url + "/completion", {"prompt": "\n".join(reversed(other)), "n_predict": 1, "id_slot": user.i})
    r = user.edit_and_complete("z")  # another client's request took this user's slot meanwhile
    out["slot_taken"] = {"ttft_ms": r["ttft_ms"], "server_computed": r["prefilled_tokens"]}
    server.kill()
    server.start(timeout=300)
    r = user.edit_and_complete("y")
    out["server_restarted"] = {"ttft_ms": r["ttft_ms"], "server_computed": r["prefilled_tokens"]}
    return out


if __name__ == "__main__":
    main()
