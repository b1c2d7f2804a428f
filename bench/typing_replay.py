"""Typing real code through the real language server, as editors do: how often a suggestion is there at once.

    python bench/typing.py --source DIR [--source DIR2 ...] [--bodies 3] [--per-doc 3] [--modes full,off]
        [--sync incremental|full] [--removal outright|placeholder] [--pause-ms 2000] [--no-cancel]
        [--json bench/results/typing.json]

Function bodies of packages nobody here wrote are removed from disk (outright, or leaving `...`), each package
is warmed, then a simulated user types the bodies back through the real `banked-lsp` with a real LSP client,
against a real daemon with the embedded model, as an editor does:

- one key every 250 ms; Enter with auto-indent (the next line's indentation comes with the newline, one key);
  Tab only when the ghost text shown is exactly what the user was about to type (then it all goes in, one key);
- a pause at the start of every line (a random share of `--pause-ms`, up to it, as people pause to think) and
  a pause of `--jump-pause-ms` on arriving at a body (the cursor put after its `def` line, then Enter);
- an automatic inline-completion request after every key; an unanswered one is dropped at the next key with
  `$/cancelRequest`, as VS Code and Neovim do (`--no-cancel`: left to the server);
- `--per-doc N` bodies of one file typed in one open document, top to bottom; full or incremental sync.

Reported per package and pooled, per mode, in one run on the same bodies: the share of keystrokes that show a
suggestion within 150 ms, the share of the bodies' characters saved by Tab, model calls per keystroke, and the
**jump**: the time from arriving at a body to its first suggestion (p50, p90), apart from typing-through.
The JSON keeps, per key, what the language server did with its request (`banked/trace`: from the cache, a
running call followed, a new call, nothing) and how each model call ended with the daemon's own counts.

Modes: `full` (typing through, the cache and speculation), `reuse` (no speculation), `off` (none of them);
`MODE:psm`/`MODE:spm` sets the FIM order, `MODE@KEY=VALUE` (repeatable) any daemon setting.
"""

from __future__ import annotations

import sys

# This file's name shadows the standard `typing` module while bench/ is first on sys.path: put bench/ last.
if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    sys.path.append(sys.path.pop(0))

import argparse
import asyncio
import itertools
import json
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
from common import Daemon, print_rows, report, start_lsp
from lsprotocol import types
from pygls.lsp.client import LanguageClient

MODES = {
    "full": {"reuse": True, "speculate": True},
    "reuse": {"reuse": True, "speculate": False},
    "off": {"reuse": False, "speculate": False},
}
QUICK = 0.150  # a suggestion within this of the key counts as "at once"


@dataclass
class Body:
    path: str
    header_line: int  # 0-based, in the file as it is on disk after removal: the line that ends with `:`
    text: str  # the body as it was, newline-separated, indentation included


@dataclass
class Keystroke:
    sent: float
    version: int
    shown_at: float | None = None  # when a non-empty suggestion for this version arrived
    accepted: int = 0  # characters a Tab here put in
    line_start: bool = False  # the key that put the cursor at the start of a line (Enter), or the arrival
    arrival: bool = False  # the arrival at a body (its jump), not a typed key
    how: str = ""  # what the server did with this key's request (banked/trace)


@dataclass
class Jump:
    arrived: float
    first_shown: float | None = None  # the first suggestion shown in the body, for any key


@dataclass
class Result:
    keys: list[Keystroke] = field(default_factory=list)
    jumps: list[Jump] = field(default_factory=list)
    chars: int = 0
    saved: int = 0
    model_calls: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)  # banked/trace of each model call's end


def candidate_bodies(root: Path) -> dict[str, list[tuple[int, int, str]]]:
    """Per file: function bodies of 3 to 12 lines not opened by a docstring or comment, as (header line,
    last line, text), not nested in one another."""
    out: dict[str, list[tuple[int, int, str]]] = {}
    for path in sorted(root.rglob("*.py")):
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        lines = text.split("\n")
        found: list[tuple[int, int, str]] = []
        for s in syntax.symbols(syntax.parse_text("python", text)):
            if s.kind != "function_definition" or not 3 <= s.end_line - s.start_line <= 12:
                continue
            head = next((i for i in range(s.start_line, s.end_line + 1) if lines[i].rstrip().endswith(":")), None)
            if head is None or head >= s.end_line:
                continue
            body = lines[head + 1 : s.end_line + 1]
            if body and not body[0].strip().startswith(('"""', "'''", "#")) and body[0].strip():
                found.append((head, s.end_line, "\n".join(body)))
        found.sort()
        flat = [b for i, b in enumerate(found) if i == 0 or b[0] > found[i - 1][1]]
        if flat:
            out[str(path.relative_to(root))] = flat
    return out


def pick_bodies(root: Path, n: int, per_doc: int, seed: int) -> list[list[Body]]:
    """`n` bodies in groups of up to `per_doc` from one file each (deterministic-random), header lines as on
    disk after every chosen body is removed (`placeholder`: each body becomes one `...` line)."""
    rng = random.Random(seed)
    cands = candidate_bodies(root)
    files = sorted(cands)
    rng.shuffle(files)
    files.sort(key=lambda f: len(cands[f]) < per_doc)  # files with enough bodies first, in random order
    out: list[list[Body]] = []
    left = n
    for f in files:
        if left <= 0:
            break
        k = min(per_doc, left, len(cands[f]))
        out.append([Body(f, h, t) for h, _e, t in sorted(rng.sample(cands[f], k))])
        left -= k
    return out


def remove_bodies(root: Path, group: list[Body], placeholder: bool) -> list[Body]:
    """Remove the group's bodies from its file on disk; returns them with their header lines as they are now."""
    p = root / group[0].path
    lines = p.read_text().split("\n")
    shifted: list[Body] = []
    removed = 0
    for b in group:  # top to bottom: each removal moves the lines below it up
        n = b.text.count("\n") + 1
        at = b.header_line - removed
        indent = b.text[: len(b.text) - len(b.text.lstrip())]
        lines[at + 1 : at + 1 + n] = [indent + "..."] if placeholder else []
        removed += n - (1 if placeholder else 0)
        shifted.append(Body(b.path, at, b.text))
    p.write_text("\n".join(lines))
    return shifted


def plain(o: Any) -> Any:
    """pygls hands unknown notifications' params over as namedtuples: back to dicts and lists."""
    if hasattr(o, "_asdict"):
        return {k: plain(v) for k, v in o._asdict().items()}
    if isinstance(o, dict):
        return {k: plain(v) for k, v in o.items()}
    return [plain(v) for v in o] if isinstance(o, list) else o


def utf16(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


class Editor:
    """An LSP client that types, asks for inline completions after every key, drops unanswered ones at the
    next key (`$/cancelRequest`), and keeps what is shown."""

    def __init__(self, env: dict[str, str], root: Path, settings: dict[str, Any], sync: str, cancel: bool):
        self.env, self.root, self.settings, self.sync, self.cancel = env, root, settings, sync, cancel
        self.client = LanguageClient("banked-typing", "0")
        self.version = 1
        self.calls = 0
        self.text = ""  # the open document's text (for full sync)
        self.shown: dict[int, tuple[str, float]] = {}  # version -> (suggestion, when it arrived)
        self.how: dict[int, str] = {}  # version -> how the server answered it
        self.call_ends: list[dict[str, Any]] = []
        self.waiting: set[asyncio.Task[None]] = set()
        self.pending: tuple[str, asyncio.Future[Any]] | None = None  # the unanswered request
        self.ids = itertools.count(1)
        self.on_shown: Any = None

        @self.client.feature("banked/modelCall")
        def on_model_call(_c: LanguageClient, params: Any) -> None:
            self.calls += 1  # every request the server sent the daemon, cancelled and speculative ones too

        @self.client.feature("banked/trace")
        def on_trace(_c: LanguageClient, params: Any) -> None:
            p = plain(params)
            if p.get("event") == "request" and p.get("version") is not None:
                self.how.setdefault(int(p["version"]), str(p.get("how")))
            elif p.get("event") == "call":
                self.call_ends.append({k: v for k, v in p.items() if k != "uri"})

        for name in ("banked/metrics", "banked/status", "banked/refreshInline"):
            # refreshInline: this user types on every `interval`, and the next key asks again anyway
            self.client.feature(name)(lambda _c, _p: None)

    async def start(self) -> None:
        await start_lsp(self.client, self.env, self.root, {**self.settings, "metrics": True})

    def open(self, uri: str, text: str) -> None:
        self.version += 1  # versions keep rising across documents: no answer counts for another's key
        self.text = text
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=self.version, text=text)
            )
        )

    def close(self, uri: str) -> None:
        self.client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )

    def edit(self, uri: str, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        """Replace the range (line, utf-16 column) with `text`, synced incrementally or as the whole text."""
        self.version += 1
        lines = self.text.split("\n")

        def offset(row: int, col: int) -> int:
            line = lines[row]
            units = 0
            for i, ch in enumerate(line):
                if units >= col:
                    return sum(len(x) + 1 for x in lines[:row]) + i
                units += utf16(ch)
            return sum(len(x) + 1 for x in lines[:row]) + len(line)

        a, b = offset(*start), offset(*end)
        self.text = self.text[:a] + text + self.text[b:]
        change: Any
        if self.sync == "full":
            change = types.TextDocumentContentChangeWholeDocument(text=self.text)
        else:
            rng = types.Range(start=types.Position(*start), end=types.Position(*end))
            change = types.TextDocumentContentChangePartial(range=rng, text=text)
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.version),
                content_changes=[change],
            )
        )

    def drop_pending(self) -> None:
        """The editor moved on: an unanswered request is cancelled, as VS Code does at every keystroke."""
        if self.pending is not None:
            msg_id, fut = self.pending
            self.pending = None
            if not fut.done() and self.cancel:
                self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))

    def ask(self, uri: str, line: int, col: int) -> None:
        """An automatic inline-completion request for the current version; its answer lands in `shown`."""
        version = self.version
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=col),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        )
        msg_id = f"typing-{next(self.ids)}"
        fut = self.client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)
        self.pending = (msg_id, fut)

        async def wait() -> None:
            try:
                r = await fut
            except Exception:  # cancelled or failed: nothing shown
                return
            items = r.items if isinstance(r, types.InlineCompletionList) else (r or [])
            text = str(items[0].insert_text) if items else ""
            if text.strip() and version == self.version:  # an answer for an older version is not shown
                now = time.perf_counter()
                self.shown[version] = (text, now)
                if self.on_shown is not None:
                    self.on_shown(now)

        task = asyncio.ensure_future(wait())
        self.waiting.add(task)
        task.add_done_callback(self.waiting.discard)


@dataclass
class Typist:
    """The simulated user's habits."""

    interval: float
    pause: float  # at most this long at the start of a line
    jump_pause: float  # on arriving at a body
    rng: random.Random


async def type_body(ed: Editor, uri: str, row: int, b: Body, placeholder: bool, who: Typist, res: Result) -> int:
    """Arrive after `b`'s header line at `row` (the cursor at its end, then Enter; with a placeholder, the `...`
    line selected and deleted), then type the body, accepting exact suggestions with Tab. Returns the number
    of lines the body added to the document."""
    header = ed.text.split("\n")[row]
    indent = b.text[: len(b.text) - len(b.text.lstrip())]
    if placeholder:  # the `...` line goes, its indentation stays: the cursor is where the body starts
        ph = ed.text.split("\n")[row + 1]
        ed.edit(uri, (row + 1, 0), (row + 1, utf16(ph)), indent)
    else:
        ed.edit(uri, (row, utf16(header)), (row, utf16(header)), "\n" + indent)
    jump = Jump(time.perf_counter())
    res.jumps.append(jump)
    ed.on_shown = lambda t: setattr(jump, "first_shown", jump.first_shown or t)
    r, col = row + 1, utf16(indent)
    arrival = Keystroke(jump.arrived, ed.version, line_start=True, arrival=True)
    ed.ask(uri, r, col)
    await asyncio.sleep(who.jump_pause + who.interval)
    typed = indent
    pending_key: Keystroke | None = arrival
    while typed != b.text:
        _settle(ed, pending_key, res)
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
        ed.edit(uri, (r, col), (r, col), chunk)
        ed.drop_pending()  # after the change, as VS Code cancels the superseded request
        typed += chunk
        parts = chunk.split("\n")
        r, col = (r + len(parts) - 1, utf16(parts[-1])) if len(parts) > 1 else (r, col + utf16(chunk))
        key.version = ed.version
        key.line_start = len(parts) > 1 and typed != b.text and not b.text[len(typed) :].startswith("\n")
        ed.ask(uri, r, col)
        pending_key = key
        pause = who.rng.uniform(0, who.pause) if key.line_start else 0.0
        await asyncio.sleep(who.interval + pause)
    _settle(ed, pending_key, res)
    ed.drop_pending()
    ed.on_shown = None
    res.chars += len(b.text) - len(indent)
    return b.text.count("\n") + (0 if placeholder else 1)


def _settle(ed: Editor, key: Keystroke | None, res: Result) -> None:
    """Record what the key before this moment got (its version's answer, and how the server answered)."""
    if key is None:
        return
    s = ed.shown.get(key.version)
    key.shown_at = s[1] if s else None
    key.how = ed.how.get(key.version, "")
    res.keys.append(key)


async def run_mode(
    name: str, root: Path, groups: list[list[Body]], args: argparse.Namespace, env: dict[str, str]
) -> Result:
    ed = Editor(env, root, {**MODES[name], "debounceMs": 75}, args.sync, not args.no_cancel)
    await ed.start()
    res = Result()
    who = Typist(args.interval_ms / 1000, args.pause_ms / 1000, args.jump_pause_ms / 1000, random.Random(args.seed))
    placeholder = args.removal == "placeholder"
    try:
        for group in groups:
            path = root / group[0].path
            uri = path.as_uri()
            ed.open(uri, path.read_text())
            added = 0
            for b in group:
                print(f"  {name}: typing {b.path}:{b.header_line + 2 + added} ({len(b.text)} characters)", flush=True)
                added += await type_body(ed, uri, b.header_line + added, b, placeholder, who, res)
            ed.close(uri)
        res.model_calls = ed.calls
        res.calls = ed.call_ends
    finally:
        await ed.client.shutdown_async(None)
        ed.client.exit(None)
        await ed.client.stop()
    return res


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def summarize(res: Result) -> dict[str, Any]:
    """Typing keys only (the arrival is the jump's, reported apart)."""
    keys = [k for k in res.keys if not k.arrival]
    n = len(keys)
    quick = [k for k in keys if k.shown_at is not None and k.shown_at - k.sent <= QUICK]
    waits = [1000 * (k.shown_at - k.sent) for k in keys if k.shown_at is not None]
    jumps = [1000 * (j.first_shown - j.arrived) if j.first_shown is not None else float("inf") for j in res.jumps]
    hows: dict[str, int] = {}
    for k in keys:
        kind = k.how.split(":")[0] or "no answer"
        kind = kind if k.shown_at is not None else f"dark ({kind})"
        hows[kind] = hows.get(kind, 0) + 1
    return {
        "keystrokes": n,
        "shown_within_150ms": 100 * len(quick) / n if n else 0.0,
        "chars_saved": 100 * res.saved / res.chars if res.chars else 0.0,
        "p50_ms_to_suggestion": statistics.median(waits) if waits else None,
        "model_calls_per_keystroke": res.model_calls / n if n else 0.0,
        "tabs": sum(1 for k in keys if k.accepted),
        "jump_ms": jumps,
        "jump_p50_ms": pct(jumps, 0.5),
        "jump_p90_ms": pct(jumps, 0.9),
        "by_how": dict(sorted(hows.items())),
        "quick": len(quick),
        "saved": res.saved,
        "chars": res.chars,
        "model_calls": res.model_calls,
        "keys": [  # ms since the mode began, ms to a shown suggestion (None: none), chars a Tab put in, how
            [
                round(1000 * (k.sent - res.keys[0].sent)),
                round(1000 * (k.shown_at - k.sent)) if k.shown_at is not None else None,
                k.accepted,
                k.how,
                k.line_start,
            ]
            for k in keys
        ],
        "calls": res.calls,
    }


def pooled(per_pkg: list[dict[str, Any]]) -> dict[str, Any]:
    n = sum(s["keystrokes"] for s in per_pkg)
    jumps = [ms for s in per_pkg for ms in s["jump_ms"]]
    chars = sum(s["chars"] for s in per_pkg)
    return {
        "keystrokes": n,
        "shown_within_150ms": 100 * sum(s["quick"] for s in per_pkg) / n if n else 0.0,
        "chars_saved": 100 * sum(s["saved"] for s in per_pkg) / chars if chars else 0.0,
        "model_calls_per_keystroke": sum(s["model_calls"] for s in per_pkg) / n if n else 0.0,
        "tabs": sum(s["tabs"] for s in per_pkg),
        "jump_p50_ms": pct(jumps, 0.5),
        "jump_p90_ms": pct(jumps, 0.9),
        "jumps": len(jumps),
        "min_package_shown": min((s["shown_within_150ms"] for s in per_pkg), default=0.0),
    }


def mode_env(env: dict[str, str], name: str) -> tuple[str, dict[str, str]]:
    """`full@compact_idle_s=30:psm` -> ("full", env with those daemon settings)."""
    out = dict(env)
    name_, *sets = name.split("@")
    for kv in sets:
        key, _, value = kv.partition("=")
        value, _, order = value.partition(":")
        out[f"BANKED_{key.upper()}"] = value
        if order:
            out["BANKED_FIM_ORDER"] = order
    mode, _, order = name_.partition(":")
    if order:
        out["BANKED_FIM_ORDER"] = order
    return mode, out


async def run_package(source: str, args: argparse.Namespace, model: Path) -> dict[str, Any]:
    """Copy the package, remove the bodies, warm it once (its snapshot is every mode's start), type in each mode.
    With `--workdir`, a package prepared before with the same bodies is reused, warm cache and all."""
    name = Path(source).name
    key = f"{args.seed}-{args.bodies}-{args.per_doc}-{args.removal}-{args.n_ctx}"
    tmp = Path(args.workdir) / f"{name}-{key}" if args.workdir else Path(tempfile.mkdtemp(prefix="banked-typing-"))
    root = tmp / name
    env = {**paths.isolated_env(tmp), "BANKED_MODEL": str(model), "BANKED_N_CTX": str(args.n_ctx)}
    prepared = tmp / "prepared.json"
    if prepared.exists():
        groups = [[Body(**b) for b in g] for g in json.loads(prepared.read_text())["groups"]]
        warm = json.loads(prepared.read_text())["warm"]
        print(f"{name}: prepared before in {tmp}", flush=True)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copytree(source, root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests", "test"))
        (root / ".git").mkdir()
        groups = [
            remove_bodies(root, g, args.removal == "placeholder")
            for g in pick_bodies(root, args.bodies, args.per_doc, args.seed)
        ]
        daemon = Daemon(env).start()
        t0 = time.perf_counter()
        warm = daemon.call("warm", {"root": str(root)})
        daemon.stop()  # its snapshot is written: every mode starts from the same warm cache
        print(f"{name}: warmed {warm['tokens']:,} tokens in {time.perf_counter() - t0:.0f}s", flush=True)
        prepared.write_text(json.dumps({"groups": [[b.__dict__ for b in g] for g in groups], "warm": warm}))
    data: dict[str, Any] = {"source": source, "bodies": [b.__dict__ for g in groups for b in g], "modes": {}}
    data["workspace_tokens"] = warm["tokens"]
    print(f"daemon logs in {env['BANKED_LOG_DIR']}", flush=True)
    if args.prepare_only:
        return data
    for name in args.modes.split(","):
        mode, menv = mode_env(env, name)
        daemon = Daemon(menv).start()  # a fresh daemon per mode: no completions cached by another mode
        try:
            daemon.call("warm", {"root": str(root)})
            data["modes"][name] = summarize(await run_mode(mode, root, groups, args, menv))
        finally:
            daemon.stop()
        s = data["modes"][name]
        print(
            f"  {root.name} {name}: {s['keystrokes']} keys, {s['shown_within_150ms']:.1f} % shown ≤150 ms, "
            f"{s['chars_saved']:.1f} % saved, {s['model_calls_per_keystroke']:.3f} calls/key, "
            f"jump p50 {s['jump_p50_ms']} ms; {s['by_how']}",
            flush=True,
        )
    return data


COLUMNS = [
    "package",
    "mode",
    "keys",
    "shown ≤150 ms %",
    "chars saved %",
    "calls/key",
    "tabs",
    "jump p50 ms",
    "jump p90 ms",
]


def ms(v: float | None) -> Any:
    return "-" if v is None else ("never" if v == float("inf") else round(v))


async def main_async(args: argparse.Namespace) -> None:
    model = Path(args.model) if args.model else model_store.ensure_default_model()
    sources = args.source or []
    if not sources:
        raise SystemExit("give at least one --source DIR (a package nobody here wrote)")
    data: dict[str, Any] = {
        "model": str(model),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json",)},
        "packages": [],
    }
    for src in sources:
        data["packages"].append(await run_package(src, args, model))
    if args.prepare_only:
        return
    rows: list[list[Any]] = []
    data["pooled"] = {}
    for name in args.modes.split(","):
        per = [p["modes"][name] for p in data["packages"]]
        for p in data["packages"]:
            s = p["modes"][name]
            rows.append(
                [
                    Path(p["source"]).name,
                    name,
                    s["keystrokes"],
                    s["shown_within_150ms"],
                    s["chars_saved"],
                    s["model_calls_per_keystroke"],
                    s["tabs"],
                    ms(s["jump_p50_ms"]),
                    ms(s["jump_p90_ms"]),
                ]
            )
        pool = data["pooled"][name] = pooled(per)
        rows.append(
            [
                "pooled",
                name,
                pool["keystrokes"],
                pool["shown_within_150ms"],
                pool["chars_saved"],
                pool["model_calls_per_keystroke"],
                pool["tabs"],
                ms(pool["jump_p50_ms"]),
                ms(pool["jump_p90_ms"]),
            ]
        )
    how_rows = [
        [Path(p["source"]).name, name, ", ".join(f"{k} {v}" for k, v in p["modes"][name]["by_how"].items())]
        for name in args.modes.split(",")
        for p in data["packages"]
    ]
    print_rows(
        "where each key's suggestion came from (dark: none within the key)", ["package", "mode", "keys"], how_rows
    )
    report(
        f"typing {args.bodies} bodies per package ({args.per_doc} per document, {args.removal}, {args.sync} sync, "
        f"{'$/cancelRequest' if not args.no_cancel else 'no cancel'}), a key every {args.interval_ms} ms, "
        f"pauses up to {args.pause_ms} ms at line starts, {args.jump_pause_ms} ms at a jump",
        COLUMNS,
        rows,
        data,
        Path(args.json),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append", help="a package directory (repeatable); bodies come from each")
    p.add_argument("--bodies", type=int, default=3, help="bodies per package")
    p.add_argument("--per-doc", type=int, default=3, help="bodies of one file typed in one open document")
    p.add_argument("--removal", choices=["outright", "placeholder"], default="outright")
    p.add_argument("--sync", choices=["incremental", "full"], default="incremental")
    p.add_argument("--no-cancel", action="store_true", help="never send $/cancelRequest")
    p.add_argument("--pause-ms", type=int, default=2000, help="at most this pause at each line start (0: none)")
    p.add_argument("--jump-pause-ms", type=int, default=2000, help="the pause on arriving at a body")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default="full")
    p.add_argument("--interval-ms", type=int, default=250)
    p.add_argument("--n-ctx", type=int, default=32768)
    p.add_argument("--model", help="a GGUF file (default: the embedded model)")
    p.add_argument("--json", default="bench/results/typing.json")
    p.add_argument("--workdir", help="keep each prepared, warmed package here and reuse it in later runs")
    p.add_argument("--prepare-only", action="store_true", help="copy, remove the bodies and warm; type nothing")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
