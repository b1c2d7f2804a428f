"""One model, many requests: a single worker thread runs jobs by priority.

Completions preempt everything; chat (explain/refactor) comes next; prefill,
compaction and snapshots run in the background. Long jobs poll `ctx.preempted`
between chunks or tokens and return `YIELD` to be resumed after the more urgent
work, so a completion never waits for a whole-workspace re-prefill.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

log = logging.getLogger(__name__)


class Priority(IntEnum):
    COMPLETE = 0
    CHAT = 1
    BACKGROUND = 2


class Cancelled(Exception):
    pass


YIELD = object()  # returned by a job that stepped aside and wants to run again


@dataclass(order=True)
class _Entry:
    priority: int
    seq: int
    job: Job = field(compare=False)


class Job:
    def __init__(self, priority: Priority, fn: Callable[[Job], Any], name: str):
        self.priority = priority
        self.fn = fn
        self.name = name
        self.future: Future[Any] = Future()
        self._cancel = threading.Event()
        self._scheduler: Scheduler | None = None

    def cancel(self) -> None:
        self._cancel.set()

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def preempted(self) -> bool:
        """True when more urgent work waits: the job should step aside at its next chunk."""
        s = self._scheduler
        return s is not None and s.waiting_above(self.priority)


class Scheduler:
    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._closed = False
        self.running: Job | None = None
        self.outcomes: Counter[str] = Counter()  # "<priority>.<done|cancelled|failed>": for status and benches
        self._thread = threading.Thread(target=self._loop, name="banked-model", daemon=True)
        self._thread.start()

    def submit(self, priority: Priority, fn: Callable[[Job], Any], name: str = "") -> Job:
        job = Job(priority, fn, name or fn.__name__)
        job._scheduler = self
        with self._cond:
            if self._closed:
                job.future.set_exception(Cancelled("daemon is shutting down"))
                return job
            heapq.heappush(self._heap, _Entry(int(priority), next(self._seq), job))
            self._cond.notify()
        return job

    def waiting_above(self, priority: int) -> bool:
        with self._cond:
            return any(e.priority < priority and not e.job.cancelled() for e in self._heap)

    def queued(self) -> list[str]:
        """The names of the jobs waiting to run, most urgent first."""
        with self._cond:
            return [e.job.name for e in sorted(self._heap) if not e.job.cancelled()]

    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + (1 if self.running else 0)

    def close(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._closed = True
            for e in self._heap:
                e.job.cancel()
            if self.running is not None:
                self.running.cancel()
            self._cond.notify()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._closed:
                    self._cond.wait()
                if not self._heap:
                    return
                entry = heapq.heappop(self._heap)
                job = self.running = entry.job
            started = job.future.running() or job.future.set_running_or_notify_cancel()
            kind = job.priority.name.lower()
            if job.cancelled() or not started:
                self.outcomes[f"{kind}.cancelled"] += 1  # counted before the waiter can answer (below)
                if not job.future.done():
                    job.future.set_exception(Cancelled(job.name))
                self.running = None
                continue
            t0 = time.perf_counter()
            try:
                result = job.fn(job)
            except BaseException as exc:  # the worker must survive any job
                log.debug(
                    "job %s ended after %.0f ms: %s", job.name, 1000 * (time.perf_counter() - t0), type(exc).__name__
                )
                if isinstance(exc, Cancelled):
                    self.outcomes[f"{kind}.cancelled"] += 1
                else:
                    log.exception("job %s failed", job.name)
                    self.outcomes[f"{kind}.failed"] += 1
                job.future.set_exception(exc)
            else:
                # What the model thread did, step by step (a debug log is how a dark keystroke is explained).
                what = "stepped aside" if result is YIELD else "done"
                log.debug("job %s %s after %.0f ms", job.name, what, 1000 * (time.perf_counter() - t0))
                if result is YIELD and not job.cancelled():
                    with self._cond:
                        heapq.heappush(self._heap, _Entry(entry.priority, entry.seq, job))
                # Counted before the future settles: its waiter answers the client at once, and a `status` the
                # client sends next must already count the job (it did not, now and then: a CI failure).
                elif job.cancelled() and result is YIELD:
                    self.outcomes[f"{kind}.cancelled"] += 1
                    job.future.set_exception(Cancelled(job.name))
                else:
                    self.outcomes[f"{kind}.done"] += 1
                    job.future.set_result(result)
            finally:
                self.running = None
