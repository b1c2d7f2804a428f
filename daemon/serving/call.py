"""One request in flight, as the daemon's methods see it: how to stream to its client, how to cancel it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from banked.daemon.ipc import protocol
from banked.daemon.serving.scheduler import Job

if TYPE_CHECKING:
    from banked.daemon.serving.workspaces import Entry

Notify = Callable[[str, dict[str, Any]], None]


class UserError(Exception):
    """A request that cannot be served as asked; the message says what to do."""

    code = "bad_request"


@dataclass
class Call:
    id: int
    notify: Notify
    owner: int = 0  # the connection it came on (overlays belong to it)
    jobs: list[Job] = field(default_factory=list)
    cancelled: bool = False

    def text(self, text: str) -> None:
        self.notify(protocol.TEXT, protocol.encode(protocol.TextNote(self.id, text)))

    def progress(self, done: int, total: int, message: str) -> None:
        self.notify(protocol.PROGRESS, protocol.encode(protocol.ProgressNote(self.id, done, total, message)))

    def cancel(self) -> None:
        self.cancelled = True
        for j in self.jobs:
            j.cancel()


@dataclass(frozen=True)
class Target:
    """The file a request is about: its absolute path, its workspace and its path relative to it."""

    path: Path
    entry: Entry
    rel: str
