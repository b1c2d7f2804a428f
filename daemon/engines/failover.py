"""`remote_fallback = "local"`: the server when it answers, the local engine while it does not.

Both engines tokenize with the same vocabulary, so the workspace plan is the same token sequence for either:
switching only changes which cache the daemon keeps equal to it (the local one starts empty and warms in the
background like any cache; the server's is checked, restored from its disk or prefilled again when it comes
back). A request that fails because the server went away fails once with a clear message; the next one is
answered locally, and every `RETRY_S` the server is tried again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from banked.daemon.engines.base import Engine, EngineError, EngineInfo, OnProgress, Sampling, ShouldStop, never
from banked.daemon.engines.remote import RemoteEngine

log = logging.getLogger(__name__)
RETRY_S = 15.0


class Failover(Engine):
    """An engine that is the remote one, or the local one while the server is unreachable."""

    def __init__(self, primary: Callable[[], RemoteEngine], backup: Callable[[], Engine]):
        super().__init__(64)
        self._make_primary, self._make_backup = primary, backup
        self.remote: RemoteEngine | None = None
        self.local: Engine | None = None
        self.problem = ""  # why the server is not in use, for status and the editor
        self._retry_at = 0.0
        self._connect()
        if self.remote is None:
            self._to_local(self.problem)

    # -- which engine ---------------------------------------------------------------------

    @property
    def current(self) -> Engine:
        engine = self.remote if self.remote is not None and not self.problem else self.local
        assert engine is not None
        return engine

    def _connect(self) -> None:
        try:
            self.remote = self._make_primary()
            self.problem = ""
        except EngineError as exc:
            self.problem = str(exc)
            self._retry_at = time.monotonic() + RETRY_S

    def _to_local(self, why: str) -> None:
        if self.local is None:
            log.warning("remote engine unavailable (%s): answering from the local engine meanwhile", why)
            self.local = self._make_backup()
        self.problem = why or "the server is unreachable"
        self._retry_at = time.monotonic() + RETRY_S

    def check(self) -> None:
        """Before a request: go back to the server once it answers again (its cache checked or restored)."""
        if self.problem and time.monotonic() >= self._retry_at:
            if self.remote is None:
                self._connect()
            else:
                try:
                    self.remote.server.info()
                    self.remote.set_sequence([])  # what it holds now is unknown: the sync finds out, once
                    self.problem = ""
                except Exception as exc:  # any failure means: still away
                    self._retry_at = time.monotonic() + RETRY_S
                    log.debug("server still unreachable: %s", exc)
            if not self.problem:
                log.info("the server answers again: back to the remote engine")
        if not self.problem:
            try:
                self.current.check()
            except EngineError as exc:
                self._to_local(str(exc))

    def report(self) -> dict[str, object]:
        out: dict[str, object] = self.remote.report() if self.remote is not None else {"reachable": False}
        out["fallback"] = "local"
        out["answering"] = "local engine" if self.problem else "server"
        out["problem"] = self.problem
        return out

    def _guard(self, fn: Callable[[], int]) -> int:
        try:
            return fn()
        except EngineError as exc:
            if self.current is self.remote:
                self._to_local(str(exc))
            raise

    # -- the Engine protocol, delegated --------------------------------------------------------

    @property
    def info(self) -> EngineInfo:  # type: ignore[override]
        return self.current.info

    @property
    def generates_remotely(self) -> bool:  # type: ignore[override]
        return self.current.generates_remotely

    @property
    def cached(self) -> Sequence[int]:
        return self.current.cached

    @property
    def burst(self) -> int:
        return self.current.burst

    def truncate(self, n: int) -> None:
        self.current.truncate(n)

    def prefill(self, ids: Sequence[int], should_stop: ShouldStop = never, chunk: int = 0) -> int:
        engine = self.current
        return self._guard(lambda: engine.prefill(ids, should_stop, chunk))

    def catch_up(
        self, ids: Sequence[int], should_stop: ShouldStop = never, on_progress: OnProgress | None = None, chunk: int = 0
    ) -> int:
        engine = self.current
        return self._guard(lambda: engine.catch_up(ids, should_stop, on_progress, chunk))

    def set_sequence(self, ids: Sequence[int]) -> None:
        self.current.set_sequence(ids)

    def served(self) -> tuple[int, int] | None:
        return self.current.served()

    def logits(self) -> npt.NDArray[np.float32]:
        return self.current.logits()

    def generate(
        self, max_tokens: int, stop_ids: set[int], sampling: Sampling | None = None, should_stop: ShouldStop = never
    ) -> Generator[int, None, None]:
        engine = self.current
        try:
            yield from engine.generate(max_tokens, stop_ids, sampling, should_stop)
        except EngineError as exc:
            if engine is self.remote:
                self._to_local(str(exc))
            raise

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        return self.current.tokenize(text, special)

    def detokenize(self, ids: Sequence[int]) -> bytes:
        return self.current.detokenize(ids)

    @property
    def eos_ids(self) -> set[int]:
        return self.current.eos_ids

    def save(self, path: Path) -> None:
        self.current.save(path)

    def load(self, path: Path) -> list[int]:
        return self.current.load(path)

    def close(self) -> None:
        for engine in (self.remote, self.local):
            if engine is not None:
                engine.close()
