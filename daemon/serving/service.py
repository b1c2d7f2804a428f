"""The daemon's methods: one coroutine per request type of protocol.py, on the daemon's event loop.

Each takes its validated params structure and returns its result structure.
Everything that uses the model is a job on the scheduler's single worker
thread, which alone touches the engine; workspaces (which root a file belongs
to, what the cache holds) are workspaces.py's; prompt texts are prompts.py's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from banked.daemon import __version__, config, paths
from banked.daemon.config import Config
from banked.daemon.context import postprocess, prompts, syntax
from banked.daemon.context.templates import template_for
from banked.daemon.context.workspace import Unreadable
from banked.daemon.engines.base import Engine, EngineError
from banked.daemon.engines.generation import Generation, TextStream, run_generation
from banked.daemon.ipc import protocol as p
from banked.daemon.ipc.reuse import CompletionCache
from banked.daemon.serving import chat, completion
from banked.daemon.serving.call import Call, Target, UserError
from banked.daemon.serving.scheduler import YIELD, Cancelled, Job, Priority, Scheduler
from banked.daemon.serving.workspaces import Entry, Workspaces

log = logging.getLogger(__name__)

MIN_CHAT_ANSWER = 64  # tokens of answer a chat turn must have room for
T = TypeVar("T")


class Daemon:
    def __init__(self, cfg: Config, engine: Engine):
        self.started_with = cfg  # as configured ("auto" values included): what `status` reports
        self.cfg = config.for_engine(cfg, engine.info.device == "cpu")  # the "auto" tail settings, decided
        self.engine = engine
        self.tpl = template_for(engine)
        self.sched = Scheduler()
        self.workspaces = Workspaces(cfg, engine, self.tpl, self.sched)
        self.parses = syntax.ParseCache()  # syntax trees of the buffers completions are asked for
        self.cache = CompletionCache()  # recent completions: typed-through and repeated requests need no model
        self.started = time.time()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.workspaces.start()

    async def shutdown(self) -> None:
        self.workspaces.stop()
        job = self.sched.submit(Priority.COMPLETE, lambda j: self.workspaces.save_active(), "final snapshot")
        try:
            await asyncio.wait_for(asyncio.wrap_future(job.future), 120)
        except (TimeoutError, Cancelled, OSError, EngineError) as exc:
            log.warning("final snapshot not written: %s", exc)
        self.sched.close()
        self.engine.close()

    def connection_closed(self, owner: int) -> None:
        self.workspaces.connection_closed(owner)

    # -- methods -----------------------------------------------------------------------------

    async def ping(self, call: Call, params: p.NoParams) -> p.PingResult:
        return p.PingResult(pid=os.getpid(), version=__version__)

    async def status(self, call: Call, params: p.NoParams) -> p.StatusResult:
        info = self.engine.info
        report = getattr(self.engine, "report", None)
        if report is not None:  # a remote engine: the server, reachable now, and what its cache saved lately
            info = msgspec.structs.replace(info, extra={**info.extra, "remote": await asyncio.to_thread(report)})
        running = self.sched.running
        return p.StatusResult(
            pid=os.getpid(),
            version=__version__,
            uptime_s=round(time.time() - self.started, 1),
            engine=info,
            cached_tokens=len(self.engine.cached),
            capacity=info.n_ctx,
            pending_jobs=self.sched.pending(),
            running_job=running.name if running else None,
            queued_jobs=self.sched.queued(),
            jobs=dict(sorted(self.sched.outcomes.items())),
            workspaces=self.workspaces.status(),
            known_roots=sorted(self.workspaces.known.roots),
            socket=str(paths.socket_path()),
            snapshots_dir=str(paths.snapshots_dir()),
            settings=dataclasses.asdict(self.started_with),
        )

    async def warm(self, call: Call, params: p.WarmParams) -> p.WarmResult:
        t0 = time.perf_counter()
        root = Path(params.root).expanduser()
        if not root.is_absolute():
            raise UserError("root must be an absolute path")
        entry = await self.workspaces.register(root.resolve(), force=params.force)
        before = entry.prefilled  # counts a sync the watcher started for us, too
        await asyncio.to_thread(self.workspaces.scan, entry)

        def progress(done: int, total: int) -> None:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(call.progress, done, total, "prefilling workspace")

        job = self.workspaces.schedule_sync(entry, progress)
        await self._wait(call, job)
        plan = await asyncio.to_thread(entry.wc.plan)
        ws = entry.wc.ws
        return p.WarmResult(
            root=str(entry.root),
            files=len(ws.files),
            skipped=dict(sorted(ws.skipped.items())),
            tokens=len(plan.ids),
            dropped=plan.dropped,
            prefilled_tokens=entry.prefilled - before,
            seconds=round(time.perf_counter() - t0, 3),
            warnings=[w for w in (entry.watcher.limited if entry.watcher else None,) if w],
        )

    async def overlay(self, call: Call, params: p.OverlayParams) -> p.OverlayResult:
        t = await self._file(params)
        await self.workspaces.set_overlay(t.entry, t.rel, params.text, call.owner)
        return p.OverlayResult(path=t.rel, overlay=params.text is not None)

    async def active(self, call: Call, params: p.ActiveParams) -> p.ActiveResult:
        """Typing, as the language server sees it (throttled): a deferred sync keeps waiting. Never registers a
        workspace or reads a file: only a workspace already held is marked."""
        path = Path(params.path)
        root = Path(params.workspace) if params.workspace else self.workspaces.known.nearest(path)
        entry = self.workspaces.entries.get(root.resolve()) if root is not None and root.is_absolute() else None
        if entry is not None:
            entry.last_request = time.monotonic()
        return p.ActiveResult(known=entry is not None)

    async def complete(self, call: Call, params: p.CompleteParams) -> p.CompleteResult:
        t0 = time.perf_counter()
        t = await self._file(params)
        cursor = completion.cursor_at(await self._text(t, params.text), params, t.rel)
        scope = completion.scope(t, params)
        if params.reuse and not params.raw and (hit := self.cache.get(scope, cursor.head, cursor.after)):
            return completion.from_cache(hit, t, self.engine.info.name, self.engine.info.model, t0)
        parsed, decision = await asyncio.to_thread(
            completion.shape, self.parses, t, cursor, self.cfg.max_lines, self.cfg.multiline
        )
        max_tokens = params.max_tokens or self.cfg.max_tokens
        t.entry.last_request = time.monotonic()  # the user is typing (a speculation follows their typing too)
        await asyncio.to_thread(t.entry.wc.touch, t.rel)
        self.workspaces.ensure_synced(t.entry)
        lines = decision.max_lines if params.max_lines is None else params.max_lines
        lines_ahead = completion.lookahead(params, cursor, lines)
        made: list[Generation] = []  # built once, on the model thread; resumed if the job steps aside
        focus_len = [0]

        def build(job: Job) -> Any:
            if not made:
                focus = t.entry.wc.focus(t.rel, cursor, parsed)
                tail = focus + t.entry.wc.fim_tail(t.rel, cursor, max_tokens, before_it=len(focus))
                focus_len[0] = len(focus)
                ended = None if params.raw else (lambda text: postprocess.ended(text, cursor, decision))
                stream, budget = completion.stream_for(self.engine, lines, lines_ahead, max_tokens, ended)
                # a request prefills what it catches up on in `request_chunk` steps; a speculation keeps the
                # small ones, so a request waits at most one small step for it
                step = 0 if params.speculative else self.engine.burst
                made.append(
                    Generation(tail, self.tpl.fim_stops, budget, stream, on_text=self._stream(call), chunk=step)
                )
            return self._step(job, t.entry, made[0])

        priority = Priority.BACKGROUND if params.speculative else Priority.COMPLETE
        g = await self._run(call, priority, build, f"{'speculate' if params.speculative else 'complete'} {t.rel}")
        self.workspaces.compact_later(t.entry)
        raw, ahead = completion.split_ahead(g.stream, lines, lines_ahead, g.max_tokens)
        text = raw if params.raw else postprocess.clean(raw, cursor, decision)
        if text != raw:
            ahead = ""  # written after what the model wrote, not after what post-processing made of it
        self.cache.put(scope, cursor.head, cursor.after, text)
        if ahead:  # the next line, as a speculation after this one would have found it
            self.cache.put(scope, cursor.head + text + "\n", cursor.after, ahead.split("\n", 1)[0])
        log.debug(
            "%s %s:%d: %d cached, %d prefilled (tail %d, focus %d), %d generated, first token %.0f ms, all %.0f ms",
            "speculated" if params.speculative else "completed",
            t.rel,
            params.line + 1,
            g.reused_tokens,
            g.prefilled_tokens,
            len(g.tail),
            focus_len[0],
            len(g.generated),
            1000 * (g.ttft_s or 0),
            1000 * (time.perf_counter() - t0),
        )
        return p.CompleteResult(
            text=text,
            raw_text=raw,
            decision=decision.why,
            ahead=ahead,
            **self._timings(g),
            path=t.rel,
            workspace=str(t.entry.root),
            daemon_ms=round(1000 * (time.perf_counter() - t0), 3),
        )

    async def explain(self, call: Call, params: p.ChatParams) -> p.ExplainResult:
        turn = await self._chat(call, params, prompts.explain)
        return p.ExplainResult(text=turn.g.stream.text, **self._chat_fields(turn))

    async def refactor(self, call: Call, params: p.RefactorParams) -> p.RefactorResult:
        instruction = params.instruction or (prompts.PRESET_INSTRUCTIONS[params.preset] if params.preset else None)
        if not instruction:
            raise UserError("missing parameter 'instruction' (or a 'preset')")
        for attempt in (1, 2):  # one retry, told why
            turn = await self._chat(call, params, prompts.refactor(instruction))
            replacement = prompts.reindent(turn.original, prompts.extract_code(turn.g.stream.text))
            problems = await asyncio.to_thread(chat.rewrite_problems, turn, replacement, self.cfg.validate_refactors)
            if not problems:
                break
            if attempt == 2:
                raise UserError(
                    f"the model's rewrite of {turn.target.rel} was wrong twice ({problems[0]}); "
                    "nothing was changed: try a smaller selection or a more precise instruction"
                )
            log.info("refactor of %s: %s; retrying once", turn.target.rel, "; ".join(problems))
            instruction += prompts.retry_because(problems)
        return p.RefactorResult(replacement=replacement, answer=turn.g.stream.text, **self._chat_fields(turn))

    async def write_tests(self, call: Call, params: p.ChatParams) -> p.WriteTestsResult:
        turn = await self._chat(call, params, prompts.write_tests)
        code = prompts.extract_code(turn.g.stream.text)
        return p.WriteTestsResult(code=code, answer=turn.g.stream.text, **self._chat_fields(turn))

    # -- the file of a request ---------------------------------------------------------------

    async def _file(self, params: p.FileParams) -> Target:
        """The request's file, its workspace (registered on first use) and its relative path."""
        path = Path(params.path).expanduser()
        if not path.is_absolute():
            raise UserError("path must be absolute")
        if path.is_dir():
            raise UserError(f"{path} is a directory, not a file")
        if path.exists() and not path.is_file():
            raise UserError(f"{path} is not a regular file (a pipe, a socket or a device)")
        if not path.exists() and params.text is None:
            raise UserError(f"{path} does not exist")
        entry = await self.workspaces.register(self.workspaces.root_for(path, params.workspace))
        ws = entry.wc.ws
        rel = ws.relative(path.resolve())
        if rel is None:
            raise UserError(f"{path} is outside the workspace {entry.root}")
        if ws.is_secret(rel):
            raise UserError(f"{rel} is on banked's deny list of credential files: it is never read into a prompt")
        return Target(path, entry, rel)

    async def _text(self, t: Target, sent: str | None) -> str:
        """The buffer's text: as sent, else the unsaved overlay, else the file (read off the event loop)."""
        text = sent if sent is not None else await asyncio.to_thread(t.entry.wc.overlay, t.rel)
        if text is None:
            try:
                text = (await asyncio.to_thread(t.entry.wc.ws.load, t.rel, self.cfg.max_buffer_bytes))[0]
            except FileNotFoundError as exc:
                raise UserError(f"{t.path} does not exist") from exc
            except Unreadable as exc:
                raise UserError(f"{t.path}: {exc}") from exc
        if len(text) > self.cfg.max_buffer_bytes:
            raise UserError(
                f"{t.path} is {len(text) / 2**20:.1f} MiB; banked works in buffers up to "
                f"{self.cfg.max_buffer_bytes / 2**20:.1f} MiB (config max_buffer_bytes)"
            )
        return text

    # -- model work --------------------------------------------------------------------------

    async def _run(self, call: Call, priority: Priority, fn: Callable[[Job], T], name: str) -> T:
        if call.cancelled:  # cancelled (or its client gone) before its job existed
            raise UserError("cancelled")
        result: T = await self._wait(call, self.sched.submit(priority, fn, name))
        return result

    async def _wait(self, call: Call, job: Job) -> Any:
        call.jobs.append(job)
        if call.cancelled:
            job.cancel()
        try:
            return await asyncio.wrap_future(job.future)
        except Cancelled as exc:
            raise UserError("cancelled") from exc

    def _step(self, job: Job, entry: Entry, g: Generation) -> Any:
        """Model thread: advance a generation; YIELD lets a more urgent job run first."""
        self.workspaces.activate(entry.root)
        if g.reused_tokens < 0:
            self.engine.check()  # a remote slot taken or a restarted server: restored, or the prefix is forgotten
        if not run_generation(entry.wc, g, job.cancelled, job.preempted):
            return YIELD
        if job.cancelled():
            raise Cancelled(job.name)
        return g

    def _stream(self, call: Call) -> Callable[[str], None]:
        loop = self.loop
        assert loop is not None

        def send(text: str) -> None:
            loop.call_soon_threadsafe(call.text, text)

        return send

    def _timings(self, g: Generation) -> dict[str, Any]:
        return {**g.metrics(), "engine": self.engine.info.name, "model": self.engine.info.model}

    # -- chat turns --------------------------------------------------------------------------

    async def _chat(self, call: Call, params: p.ChatParams, prompt: prompts.ChatPrompt) -> chat.Turn:
        """Run a chat turn on the selected lines (none selected: the code around the cursor)."""
        max_tokens = params.max_tokens or self.cfg.chat_max_tokens
        t = await self._file(params)
        text = await self._text(t, params.text)
        start, end = await asyncio.to_thread(chat.selected_lines, self.parses, t, text, params)
        selected = "".join(text.splitlines(keepends=True)[start - 1 : end])
        self.workspaces.ensure_synced(t.entry)
        tail = await asyncio.to_thread(self.tpl.chat, prompt(t.rel, selected, start, end))
        room = t.entry.wc.reserve - len(tail)  # after the workspace: the prompt, then the answer
        if room < MIN_CHAT_ANSWER:
            raise UserError(
                f"the selection is too large ({len(tail)} tokens; at most {t.entry.wc.reserve - MIN_CHAT_ANSWER}): "
                "select fewer lines"
            )
        max_tokens = min(max_tokens, room)  # a longer answer than the context holds stops where it is full
        g = Generation(tail, self.tpl.chat_stops, max_tokens, TextStream(self.engine), on_text=self._stream(call))
        await self._run(call, Priority.CHAT, lambda job: self._step(job, t.entry, g), f"chat {t.rel}")
        return chat.Turn(g, t, text, start, end, selected)

    def _chat_fields(self, turn: chat.Turn) -> dict[str, Any]:
        return chat.fields(turn, self.engine.info.name, self.engine.info.model)
