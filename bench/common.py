"""Helpers shared by the benchmarks: a generated project, a daemon subprocess, table + JSON output."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from banked.daemon.ipc.client import Client
from rich.console import Console
from rich.table import Table

NOUNS = ["order", "invoice", "customer", "payment", "ledger", "account", "report", "item", "batch", "rate"]
VERBS = ["load", "save", "validate", "compute", "merge", "split", "render", "normalise", "apply", "fetch"]


def generate_project(root: Path, target_tokens: int, seed: int = 0) -> list[Path]:
    """A plausible multi-file Python package of about `target_tokens` tokens (~3.5 chars a token)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    budget = target_tokens * 3.5
    i = 0
    while budget > 0:
        noun = NOUNS[i % len(NOUNS)]
        lines = [f'"""{noun.capitalize()} handling, part {i}."""', "", "from __future__ import annotations", ""]
        if i:
            lines.insert(3, f"from .mod{rng.randrange(i):02d} import *  # noqa: F403")
        for j in range(6):
            verb = VERBS[(i + j) % len(VERBS)]
            name = f"{verb}_{noun}_{j}"
            lines += [
                "",
                f"def {name}(values: list[float], scale: float = {rng.randint(1, 9)}.0) -> float:",
                f'    """{verb.capitalize()} the {noun} values and return a scaled total."""',
                "    total = 0.0",
                "    for v in values:",
                f"        if v > {rng.randint(0, 50)}:",
                f"            total += v * scale + {rng.randint(1, 99)}",
                "    return total",
            ]
        text = "\n".join(lines) + "\n"
        p = root / "pkg" / f"mod{i:02d}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        t = 1_700_000_000 + i * 60  # coldest first in a known order
        os.utime(p, (t, t))
        files.append(p)
        budget -= len(text)
        i += 1
    return files


class Daemon:
    def __init__(self, env: dict[str, str]):
        self.env = {**os.environ, **env}
        self.sock = Path(env["BANKED_RUNTIME_DIR"]) / "daemon.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        log = Path(self.env["BANKED_LOG_DIR"])
        log.mkdir(parents=True, exist_ok=True)
        out = (log / "bench-daemon.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "banked.daemon", "serve"],
            env=self.env,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
        for _ in range(3000):
            try:
                with Client.connect(self.sock) as c:
                    c.call("ping")
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited; see {log}") from None
                time.sleep(0.1)
        raise RuntimeError("daemon did not start")

    def call(self, method: str, params: dict[str, Any]) -> Any:
        with Client.connect(self.sock) as c:
            return c.call(method, params)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(300)


def cell(v: Any) -> str:
    """A table cell: one decimal, or three below 1 (0.05 model calls per key must not print as 0.0)."""
    if not isinstance(v, float):
        return str(v)
    return f"{v:.3f}" if 0 < abs(v) < 1 else f"{v:,.1f}"


def print_rows(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(*columns, title=title)
    for r in rows:
        table.add_row(*[cell(v) for v in r])
    Console(width=140).print(table)


def report(title: str, columns: list[str], rows: list[list[Any]], data: dict[str, Any], out: Path) -> None:
    print_rows(title, columns, rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    print(f"JSON written to {out}")


async def start_lsp(client: Any, env: dict[str, str], root: Path, settings: dict[str, Any]) -> None:
    """Start the real `banked-lsp` for a pygls `client` on `root`, as an editor with inline completion."""
    from lsprotocol import types

    await client.start_io(sys.executable, "-m", "banked.lsp", env={**os.environ, **env})
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(
                text_document=types.TextDocumentClientCapabilities(
                    inline_completion=types.InlineCompletionClientCapabilities()
                )
            ),
            root_uri=root.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name=root.name)],
            initialization_options={"banked": settings},
        )
    )
    client.initialized(types.InitializedParams())
