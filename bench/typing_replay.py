"""Typing real code through the real language server: how often a suggestion is there at once.

    python bench/typing.py [--source DIR] [--bodies 6] [--modes full,off] [--json bench/results/typing.json]

Function bodies of a package nobody here wrote are removed from disk (so nothing leaks through the workspace
cache), the package is warmed, then a simulated user types each body back through the real `banked-lsp` with
a real LSP client, against a real daemon with the embedded model: one key every 250 ms, Enter with
auto-indent (the next line's indentation comes with the newline, one key), an automatic inline-completion
request after each key (as VS Code sends one), and Tab only when the ghost text shown is exactly what the
user was about to type (then the whole suggestion goes in with one key).

Per mode, in one run on the same bodies: the share of keystrokes that show a suggestion within 150 ms, the
share of the bodies' characters saved by accepting, the p50 time to a shown suggestion, and model calls per
keystroke (requests the language server sent the daemon, speculative ones included). Modes: `full` (typing
through, the cache and speculation), `reuse` (no speculation), `off` (none of them: the behaviour before);
`MODE:psm` or `MODE:spm` sets the daemon's FIM order for that mode (default: the config's), and
`MODE@KEY=VALUE` (repeatable) any other daemon setting, e.g. `full@compact_idle_s=1.5`.
"""

from __future__ import annotations

import sys

# This file's name shadows the standard `typing` module while bench/ is first on sys.path: put bench/ last.
if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    sys.path.append(sys.path.pop(0))

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from banked.daemon import paths
from banked.daemon.context import syntax
from banked.daemon.engines import model_store
from common import Daemon, report, start_lsp
from lsprotocol import types
from pygls.lsp.client import LanguageClient

MODES = {
    "full": {"reuse": True, "speculate": True},
    "reuse": {"reuse": True, "speculate": False},
    "off": {"reuse": False, "speculate": False},
}


@dataclass
class Body:
    path: str
    header_line: int  # 0-based: the `def` line; the body goes after it
    text: str  # the body as it was, newline-separated, indentation included


@dataclass
class Keystroke:
    sent: float
    version: int
    shown_at: float | None = None  # when a non-empty suggestion for this version arrived
    accepted: int = 0  # characters a Tab here put in


@dataclass
class Result:
    keys: list[Keystroke] = field(default_factory=list)
    chars: int = 0
    saved: int = 0
    model_calls: int = 0


def pick_bodies(root: Path, n: int, seed: int) -> list[Body]:
    """Function bodies of 3 to 12 lines (no docstring opening them), deterministic-random."""
    out: list[Body] = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        lines = text.split("\n")
        for s in syntax.symbols(syntax.parse_text("python", text)):
            if s.kind != "function_definition" or not 3 <= s.end_line - s.start_line <= 12:
                continue
            head = next((i for i in range(s.start_line, s.end_line + 1) if lines[i].rstrip().endswith(":")), None)
            if head is None or head >= s.end_line:
                continue
            body = lines[head + 1 : s.end_line + 1]
            if body and not body[0].strip().startswith(('"""', "'''", "#")):
                out.append(Body(str(path.relative_to(root)), head, "\n".join(body)))
    random.Random(seed).shuffle(out)
    chosen: list[Body] = []
    for b in out:  # at most one body per file: removing two from one file shifts the other's lines
        if all(c.path != b.path for c in chosen):
            chosen.append(b)
        if len(chosen) == n:
            break
    return chosen


def remove_bodies(root: Path, bodies: list[Body]) -> None:
    """On disk, each chosen function keeps its `def` line and gets `...` for a body (it still parses)."""
    for b in bodies:
        p = root / b.path
        lines = p.read_text().split("\n")
        n = b.text.count("\n") + 1
        indent = b.text[: len(b.text) - len(b.text.lstrip())]
        lines[b.header_line + 1 : b.header_line + 1 + n] = [indent + "..."]
        p.write_text("\n".join(lines))


class Editor:
    """An LSP client that types, asks for inline completions after every key, and keeps what is shown."""

    def __init__(self, env: dict[str, str], root: Path, settings: dict[str, Any]):
        self.env, self.root, self.settings = env, root, settings
        self.client = LanguageClient("banked-typing", "0")
        self.version = 1
        self.calls = 0
        self.shown: dict[int, tuple[str, float]] = {}  # version -> (suggestion, when it arrived)
        self.waiting: set[asyncio.Task[None]] = set()

        @self.client.feature("banked/modelCall")
        def on_model_call(_c: LanguageClient, params: Any) -> None:
            self.calls += 1  # every request the server sent the daemon, cancelled and speculative ones too

        @self.client.feature("banked/metrics")
        def on_metrics(_c: LanguageClient, params: Any) -> None:
            pass

        @self.client.feature("banked/status")
        def on_status(_c: LanguageClient, params: Any) -> None:
            pass

        @self.client.feature("banked/refreshInline")
        def on_refresh(_c: LanguageClient, params: Any) -> None:
            pass  # this user types every `interval`: the next key asks again anyway

    async def start(self) -> None:
        await start_lsp(self.client, self.env, self.root, {**self.settings, "metrics": True})

    def open(self, uri: str, text: str) -> None:
        self.version += 1  # versions keep rising across bodies, so no answer counts for another body's key
        self.shown.clear()
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=self.version, text=text)
            )
        )

    def close(self, uri: str) -> None:
        self.client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )

    def insert(self, uri: str, line: int, col: int, text: str) -> None:
        self.version += 1
        pos = types.Position(line=line, character=col)
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.version),
                content_changes=[
                    types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=text)
                ],
            )
        )

    def ask(self, uri: str, line: int, col: int) -> None:
        """An automatic inline-completion request for the current version; its answer lands in `shown`."""
        version = self.version
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=col),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        )

        async def wait() -> None:
            try:
                r = await self.client.text_document_inline_completion_async(params)
            except Exception:  # cancelled or failed: nothing shown
                return
            items = r.items if isinstance(r, types.InlineCompletionList) else (r or [])
            text = str(items[0].insert_text) if items else ""
            if text.strip():
                self.shown[version] = (text, time.perf_counter())

        task = asyncio.ensure_future(wait())
        self.waiting.add(task)
        task.add_done_callback(self.waiting.discard)


def utf16(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


async def type_body(ed: Editor, root: Path, b: Body, interval: float, res: Result) -> None:
    """Type `b` after its `def` line, one key every `interval`, accepting exact suggestions with Tab."""
    path = root / b.path
    uri = path.as_uri()
    disk = path.read_text().split("\n")
    indent = b.text[: len(b.text) - len(b.text.lstrip())]  # Enter after the `def` line put the cursor here
    lines = [*disk[: b.header_line + 1], indent, *disk[b.header_line + 2 :]]  # the `...` line is rewritten
    ed.open(uri, "\n".join(lines))
    row, col = b.header_line + 1, utf16(indent)
    typed = indent
    while typed != b.text:
        rest = b.text[len(typed) :]
        shown = ed.shown.get(ed.version, ("", 0.0))[0]
        key = Keystroke(time.perf_counter(), 0)
        if shown and rest.startswith(shown):
            chunk = shown  # Tab: exactly what the user was about to type
            key.accepted = len(shown)
            res.saved += len(shown)
        elif rest.startswith("\n"):
            nxt = rest[1:].split("\n", 1)[0]
            chunk = "\n" + nxt[: len(nxt) - len(nxt.lstrip())]  # Enter with auto-indent
        else:
            chunk = rest[0]
        ed.insert(uri, row, col, chunk)
        typed += chunk
        parts = chunk.split("\n")
        row, col = (row + len(parts) - 1, utf16(parts[-1])) if len(parts) > 1 else (row, col + utf16(chunk))
        key.version = ed.version
        res.keys.append(key)
        ed.ask(uri, row, col)
        await asyncio.sleep(interval)
        s = ed.shown.get(key.version)
        key.shown_at = s[1] if s else None
    res.chars += len(b.text)
    ed.close(uri)


async def run_mode(name: str, root: Path, bodies: list[Body], interval: float, env: dict[str, str]) -> Result:
    ed = Editor(env, root, {**MODES[name], "debounceMs": 75})
    await ed.start()
    res = Result()
    try:
        for b in bodies:
            print(f"  {name}: typing {b.path}:{b.header_line + 2} ({len(b.text)} characters)", flush=True)
            await type_body(ed, root, b, interval, res)
        res.model_calls = ed.calls
    finally:
        await ed.client.shutdown_async(None)
        ed.client.exit(None)
        await ed.client.stop()
    return res


def summarize(res: Result) -> dict[str, Any]:
    n = len(res.keys)
    quick = [k for k in res.keys if k.shown_at is not None and k.shown_at - k.sent <= 0.150]
    waits = [1000 * (k.shown_at - k.sent) for k in res.keys if k.shown_at is not None]
    return {
        "keystrokes": n,
        "shown_within_150ms": 100 * len(quick) / n if n else 0.0,
        "chars_saved": 100 * res.saved / res.chars if res.chars else 0.0,
        "p50_ms_to_suggestion": statistics.median(waits) if waits else None,
        "model_calls_per_keystroke": res.model_calls / n if n else 0.0,
        "tabs": sum(1 for k in res.keys if k.accepted),
        "keys": [  # per key: ms since the mode began, ms to a shown suggestion (None: none), characters a Tab put in
            [
                round(1000 * (k.sent - res.keys[0].sent)),
                round(1000 * (k.shown_at - k.sent)) if k.shown_at is not None else None,
                k.accepted,
            ]
            for k in res.keys
        ],
    }


async def main_async(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="banked-typing-"))
    root = tmp / Path(args.source).name
    shutil.copytree(args.source, root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / ".git").mkdir()
    bodies = pick_bodies(root, args.bodies, args.seed)
    remove_bodies(root, bodies)
    model = Path(args.model) if args.model else model_store.ensure_default_model()
    env = {**paths.isolated_env(tmp), "BANKED_MODEL": str(model), "BANKED_N_CTX": str(args.n_ctx)}
    data: dict[str, Any] = {"source": args.source, "model": str(model), "bodies": [b.__dict__ for b in bodies]}
    daemon = Daemon(env).start()
    t0 = time.perf_counter()
    warm = daemon.call("warm", {"root": str(root)})
    daemon.stop()  # its snapshot is written: every mode starts from the same warm cache
    print(f"warmed {warm['tokens']:,} tokens in {time.perf_counter() - t0:.0f}s; typing {len(bodies)} bodies")
    print(f"daemon logs in {env['BANKED_LOG_DIR']}", flush=True)
    data["modes"] = {}
    for name in args.modes.split(","):
        mode_env = dict(env)
        name_, *sets = name.split("@")  # full@compact_idle_s=30: a daemon setting for this mode only
        for kv in sets:
            key, _, value = kv.partition("=")
            mode_env[f"BANKED_{key.upper()}"] = value
        mode, _, order = name_.partition(":")  # e.g. full:spm, the FIM order the daemon lays its tail out in
        if order:
            mode_env["BANKED_FIM_ORDER"] = order
        daemon = Daemon(mode_env).start()  # a fresh daemon per mode: no completions cached by another mode
        try:
            daemon.call("warm", {"root": str(root)})
            data["modes"][name] = summarize(await run_mode(mode, root, bodies, args.interval_ms / 1000, mode_env))
        finally:
            daemon.stop()
        print(f"  {name}: { {k: v for k, v in data['modes'][name].items() if k != 'keys'} }", flush=True)
    rows = [
        [
            name,
            s["keystrokes"],
            s["shown_within_150ms"],
            s["chars_saved"],
            s["p50_ms_to_suggestion"] if s["p50_ms_to_suggestion"] is not None else "-",
            s["model_calls_per_keystroke"],
            s["tabs"],
        ]
        for name, s in data["modes"].items()
    ]
    report(
        f"typing {len(bodies)} function bodies of {root.name}, one key every {args.interval_ms} ms",
        ["mode", "keys", "shown ≤150 ms %", "chars saved %", "p50 ms to suggestion", "model calls/key", "tabs"],
        rows,
        data,
        Path(args.json),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    import importlib.util

    spec = importlib.util.find_spec("pluggy")
    p.add_argument("--source", default=str(Path(spec.origin).parent) if spec and spec.origin else None)
    p.add_argument("--bodies", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default="full,off")
    p.add_argument("--interval-ms", type=int, default=250)
    p.add_argument("--n-ctx", type=int, default=32768)
    p.add_argument("--model", help="a GGUF file (default: the embedded model)")
    p.add_argument("--json", default="bench/results/typing.json")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
