"""What every `banked` command shares: the consoles, the model check, the daemon client, streamed calls."""

from __future__ import annotations

from typing import Any

from banked.daemon import config
from banked.daemon.engines import model_store
from banked.daemon.ipc import protocol
from banked.daemon.ipc.client import Client, connect
from banked.daemon.ipc.protocol import P, R
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def bytes_progress(label: str) -> Progress:
    return Progress(
        TextColumn(label), BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=err, transient=True
    )


def ensure_model() -> None:
    """Assemble the embedded model here, with a progress bar, before a daemon needs it."""
    m = model_store.packaged(config.load().model)
    if m is None or model_store.is_ready(m):
        return
    with bytes_progress(f"assembling the model {m.name}") as bar:
        task = bar.add_task("model", total=m.size)
        model_store.ensure(m, lambda done, total: bar.update(task, completed=done))


def client() -> Client:
    ensure_model()
    with err.status("starting the banked daemon…"):
        return connect(autostart=True)


def stream_call(c: Client, method: protocol.Method[P, R], params: P, show: bool = True, progress_label: str = "") -> R:
    """Call `method`, printing streamed text or a progress bar while it runs."""
    bar: Progress | None = None
    task = None

    def on_notify(name: str, note: Any) -> None:
        nonlocal bar, task
        if name == protocol.TEXT and show:
            out.print(note.get("text", ""), end="", markup=False, soft_wrap=True)
        elif name == protocol.PROGRESS and progress_label:
            if bar is None:
                bar = Progress(
                    TextColumn(progress_label),
                    BarColumn(),
                    TaskProgressColumn(),
                    TextColumn("{task.completed}/{task.total} tokens"),
                    TimeRemainingColumn(),
                    console=err,
                    transient=True,
                )
                bar.start()
                task = bar.add_task("t", total=note["total"])
            assert task is not None
            bar.update(task, completed=note["done"], total=note["total"])

    try:
        return c.request(method, params, on_notify)
    finally:
        if bar is not None:
            bar.stop()
