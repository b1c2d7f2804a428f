"""Work-done progress (`$/progress`) for long daemon work, cancellable from the editor.

Cancelling the progress in the editor cancels the awaiting task, which cancels
the daemon's job (see `DaemonLink.call`). Clients that do not support
server-initiated progress get none, and the work still runs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from lsprotocol import types

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

log = logging.getLogger(__name__)
_tokens = itertools.count(1)


class Reporter:
    def __init__(self, ls: LanguageServer | None, token: str | None):
        self.ls = ls
        self.token = token
        self._last: tuple[int | None, str] = (None, "")

    def report(self, message: str, percentage: int | None = None) -> None:
        if self.ls is None or self.token is None or (percentage, message) == self._last:
            return
        self._last = (percentage, message)
        self.ls.work_done_progress.report(
            self.token, types.WorkDoneProgressReport(message=message, percentage=percentage)
        )


def supports_progress(ls: LanguageServer) -> bool:
    window = ls.client_capabilities.window
    return bool(window and window.work_done_progress)


@asynccontextmanager
async def progress(ls: LanguageServer, title: str, cancellable: bool = True) -> AsyncIterator[Reporter]:
    if not supports_progress(ls):
        yield Reporter(None, None)
        return
    token = f"banked-{next(_tokens)}"
    try:
        await ls.work_done_progress.create_async(token)
    except Exception as exc:  # a client that refuses is not an error worth failing the work for
        log.info("no progress for %r: %s", title, exc)
        yield Reporter(None, None)
        return
    task = asyncio.current_task()
    cancel_future = ls.work_done_progress.tokens.get(token)
    if cancellable and cancel_future is not None and task is not None:
        loop = asyncio.get_running_loop()
        cancel_future.add_done_callback(lambda f: loop.call_soon_threadsafe(task.cancel) if f.cancelled() else None)
    ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, cancellable=cancellable, percentage=0))
    message = "done"
    try:
        yield Reporter(ls, token)
    except asyncio.CancelledError:
        message = "cancelled"
        raise
    except Exception:
        message = "failed"
        raise
    finally:
        ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        ls.work_done_progress.tokens.pop(token, None)
