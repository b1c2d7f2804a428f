"""What the language server adds to a completion, and whether typing leaves work behind.

    python bench/lsp.py [--requests 500] [--keystrokes 100] [--interval-ms 20] [--json bench/results/lsp.json]

A real LSP client (pygls) drives the real `banked-lsp`, which talks to a real
daemon. The model is the tests' tiny GGUF by default: this measures the LSP's
own cost, and a fast model keeps the daemon's share small and the run short
(`--model PATH` takes any GGUF).

1. Round trip: `--requests` invoked `textDocument/inlineCompletion` requests, one
   at a time, at varying cursors. Overhead = client round trip minus the
   daemon's own time for the request (`daemon_ms`, measured inside the daemon;
   the socket and msgpack count as overhead). Debounce is 0 here.
2. Typing: `--keystrokes` characters typed `--interval-ms` apart, each a
   didChange plus an automatic inlineCompletion, the previous one cancelled
   with `$/cancelRequest` (as VS Code does), with the default 75 ms debounce.
   After the last answer the daemon must hold no queued or running job.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from banked.daemon import paths
from banked.daemon.engines.tinymodel import write_tiny_qwen2
from banked.daemon.ipc.client import Client
from common import Daemon, generate_project, report, start_lsp
from lsprotocol import types
from pygls.lsp.client import LanguageClient


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def summary(xs: list[float]) -> dict[str, float]:
    return {"p50": pct(xs, 0.5), "p90": pct(xs, 0.9), "p99": pct(xs, 0.99), "max": max(xs), "mean": statistics.mean(xs)}


class Bench:
    def __init__(self, env: dict[str, str], root: Path, sock: Path):
        self.env, self.root, self.sock = env, root, sock
        self.client = LanguageClient("banked-bench", "0")
        self.metrics: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.version = 1

        @self.client.feature("banked/metrics")
        def on_metrics(_c: LanguageClient, params: Any) -> None:
            self.metrics.put_nowait(params._asdict() if hasattr(params, "_asdict") else dict(params))

        @self.client.feature("banked/status")
        def on_status(_c: LanguageClient, params: Any) -> None:
            pass

    async def start(self) -> None:
        # The LSP's own cost on every request: no cache, no typing-through, no speculation.
        settings = {"debounceMs": 0, "metrics": True, "reuse": False, "speculate": False}
        await start_lsp(self.client, self.env, self.root, settings)

    def open(self, path: Path) -> str:
        uri = path.as_uri()
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=path.read_text())
            )
        )
        return uri

    def params(self, uri: str, line: int, col: int, automatic: bool = False) -> types.InlineCompletionParams:
        kind = types.InlineCompletionTriggerKind.Automatic if automatic else types.InlineCompletionTriggerKind.Invoked
        return types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=col),
            context=types.InlineCompletionContext(trigger_kind=kind),
        )

    async def round_trips(self, uri: str, lines: list[str], n: int) -> dict[str, list[float]]:
        rt, daemon, link = [], [], []
        spots = [(i, len(ln)) for i, ln in enumerate(lines) if ln.strip()]
        for k in range(n):
            line, col = spots[(k * 7) % len(spots)]
            t0 = time.perf_counter()
            await self.client.text_document_inline_completion_async(self.params(uri, line, col))
            t1 = time.perf_counter()
            m = await asyncio.wait_for(self.metrics.get(), 10)
            rt.append(1000 * (t1 - t0))
            daemon.append(float(m["daemon_ms"]))
            link.append(float(m["link_ms"]))
        return {"round_trip_ms": rt, "daemon_ms": daemon, "link_ms": link}

    async def typing(
        self, uri: str, line: int, col: int, keystrokes: int, interval_ms: float, debounce_ms: int
    ) -> dict[str, Any]:
        self.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"banked": {"debounceMs": debounce_ms}})
        )
        await asyncio.sleep(0.1)
        with Client.connect(self.sock) as c:
            before = dict(c.call("status")["jobs"])
        previous: str | None = None
        last: asyncio.Future[Any] | None = None
        t_start = time.perf_counter()
        for k in range(keystrokes):
            pos = types.Position(line=line, character=col + k)
            self.version += 1
            self.client.text_document_did_change(
                types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.version),
                    content_changes=[
                        types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text="x")
                    ],
                )
            )
            if previous is not None:
                self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=previous))
            previous = f"type-{k}"
            last = asyncio.ensure_future(
                self.client.protocol.send_request_async(
                    types.TEXT_DOCUMENT_INLINE_COMPLETION, self.params(uri, line, col + k + 1, True), msg_id=previous
                )
            )
            await asyncio.sleep(interval_ms / 1000)
        assert last is not None
        final = await last
        t_final = time.perf_counter()
        with Client.connect(self.sock) as c:
            at_answer = c.call("status")
            await asyncio.sleep(0.5)
            later = c.call("status")
        jobs = later["jobs"]
        delta = {k: jobs.get(k, 0) - before.get(k, 0) for k in set(jobs) | set(before)}
        return {
            "debounce_ms": debounce_ms,
            "keystrokes": keystrokes,
            "interval_ms": interval_ms,
            "typing_s": round(t_final - t_start, 3),
            "final_items": len(final.items) if final else 0,
            "pending_jobs_at_final_answer": at_answer["pending_jobs"],
            "completion_jobs_left_at_final_answer": sum(
                str(n).startswith("complete") for n in [at_answer["running_job"], *at_answer["queued_jobs"]]
            ),
            "pending_jobs_500ms_later": later["pending_jobs"],
            "complete_jobs_done": delta.get("complete.done", 0),
            "complete_jobs_cancelled": delta.get("complete.cancelled", 0),
        }

    async def stop(self) -> None:
        await self.client.shutdown_async(None)
        self.client.exit(None)
        await self.client.stop()


async def main_async(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="banked-bench-lsp-"))
    model = Path(args.model) if args.model else write_tiny_qwen2(tmp / "tiny.gguf")
    env = {
        **paths.isolated_env(tmp),
        "BANKED_MODEL": str(model),
        "BANKED_N_CTX": "8192",
        "BANKED_MAX_TOKENS": str(args.max_tokens),
    }
    root = tmp / "ws"
    files = generate_project(root, 2000)
    daemon = Daemon(env).start()
    bench = Bench(env, root, daemon.sock)
    try:
        daemon.call("warm", {"root": str(root)})
        await bench.start()
        target = files[-1]
        uri = bench.open(target)
        lines = target.read_text().split("\n")
        for _ in range(5):  # warm-up: the first requests pay for imports and the tail's first prefill
            await bench.client.text_document_inline_completion_async(bench.params(uri, 0, len(lines[0])))
            await asyncio.wait_for(bench.metrics.get(), 30)
        rt = await bench.round_trips(uri, lines, args.requests)
        overhead = [a - b for a, b in zip(rt["round_trip_ms"], rt["daemon_ms"], strict=True)]
        socket = [a - b for a, b in zip(rt["link_ms"], rt["daemon_ms"], strict=True)]
        typing = [
            await bench.typing(
                uri, len(lines) - 2, len(lines[-2]) + i * args.keystrokes, args.keystrokes, args.interval_ms, d
            )
            for i, d in enumerate((75, 0))  # the default debounce, then none: every keystroke reaches the daemon
        ]
    finally:
        await bench.stop()
        daemon.stop()
    data = {
        "model": str(model),
        "requests": args.requests,
        "round_trip_ms": summary(rt["round_trip_ms"]),
        "daemon_ms": summary(rt["daemon_ms"]),
        "lsp_overhead_ms": summary(overhead),
        "socket_and_msgpack_ms": summary(socket),
        "typing": typing,
        "targets": {"overhead_p50_le_5ms": pct(overhead, 0.5) <= 5, "overhead_p99_le_20ms": pct(overhead, 0.99) <= 20},
    }
    rows = [
        [name, *(round(data[key][q], 2) for q in ("p50", "p90", "p99", "max"))]
        for name, key in [
            ("client round trip", "round_trip_ms"),
            ("daemon's own time", "daemon_ms"),
            ("LSP overhead (round trip - daemon)", "lsp_overhead_ms"),
            ("  of which socket + msgpack", "socket_and_msgpack_ms"),
        ]
    ]
    report(
        f"banked-lsp inlineCompletion, {args.requests} requests (ms)",
        ["", "p50", "p90", "p99", "max"],
        rows,
        data,
        Path(args.json),
    )
    for t in typing:
        print(
            f"typing {t['keystrokes']} keystrokes {t['interval_ms']:.0f} ms apart, debounce {t['debounce_ms']} ms: "
            f"{t['complete_jobs_done']} daemon completions ran, {t['complete_jobs_cancelled']} cancelled; "
            f"completion jobs left at the final answer: {t['completion_jobs_left_at_final_answer']}; all jobs "
            f"then {t['pending_jobs_at_final_answer']}, 0.5 s later {t['pending_jobs_500ms_later']}; "
            f"final answer {t['final_items']} item(s)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--keystrokes", type=int, default=100)
    p.add_argument("--interval-ms", type=float, default=20.0)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--model", help="a GGUF file (default: the tests' tiny model, made here)")
    p.add_argument("--json", default="bench/results/lsp.json")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
