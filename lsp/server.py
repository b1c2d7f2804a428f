"""`banked-lsp`: the language server. A client of the daemon; it never loads a model.

The handlers below are thin: each hands its request to the feature that owns
it (lsp/features/: documents and overlays, completion, status, code actions,
warming) and turns the answer into LSP shapes. Restarting the daemon and the
settings are small enough to live here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from banked.daemon import __version__, paths
from banked.daemon.ipc import client as daemon_client
from banked.daemon.ipc import protocol, rpc
from banked.daemon.ipc.client import DaemonUnavailable
from banked.lsp.daemon_link import DaemonLink
from banked.lsp.features.actions import KINDS, Actions, UserFacingError, command_target
from banked.lsp.features.completion import Completion
from banked.lsp.features.documents import Documents
from banked.lsp.features.status import Status
from banked.lsp.features.warming import Warming
from banked.lsp.settings import Settings
from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer

log = logging.getLogger(__name__)


class BankedServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("banked-lsp", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.settings = Settings()
        self.link = DaemonLink(on_state=self.on_link_state)
        self.documents = Documents(self)
        self.completion = Completion(self)
        self.status = Status(self)
        self.actions = Actions(self)
        self.warming = Warming(self)
        self.background: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    def on_link_state(self, state: str, detail: str) -> None:
        if state == "connected":
            self.documents.resend()
        self.status.on_link_state(state, detail)

    def apply_settings(self, raw: Any) -> None:
        old = self.settings
        self.settings = old.updated(raw)
        self.link.autostart = self.settings.autostart
        if self.settings.socket != old.socket:
            self.link.sock = Path(self.settings.socket).expanduser() if self.settings.socket else None
            self.spawn(self.link.close())
        self.status.publish()

    async def restart_daemon(self) -> dict[str, Any]:
        with contextlib.suppress(DaemonUnavailable, rpc.RemoteError, OSError):
            if self.link.connected:
                await self.link.request(protocol.STOP, protocol.NoParams())
        if not await asyncio.to_thread(daemon_client.wait_for_exit, 120.0, self.link.sock):
            raise UserFacingError(f"banked: the daemon did not exit; see {paths.log_dir()}")
        await self.link.ensure(autostart=True)
        info = await self.link.request(protocol.PING, protocol.NoParams())
        self.spawn(self.warming.warm())
        return {"pid": info.pid}


server = BankedServer()


# -- lifecycle -------------------------------------------------------------------------------


@server.feature(types.INITIALIZE)
def on_initialize(ls: BankedServer, params: types.InitializeParams) -> None:
    ls.apply_settings(params.initialization_options)
    opts = params.initialization_options
    opts = opts.get("banked", opts) if isinstance(opts, dict) else {}
    if isinstance(opts, dict) and isinstance(opts.get("focused"), bool):  # is this window focused (warming.py)
        ls.warming.focused = opts["focused"]
    if get_capability(params.capabilities, "text_document.inline_completion", None) is None:
        # Classic completion only for clients without inline completion: offered to both, editors fire both on
        # each keystroke and the newer request cancels the other (ghost text and menu fight).
        server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "(", " "]))(
            on_completion
        )


@server.feature(types.INITIALIZED)
def on_initialized(ls: BankedServer, params: types.InitializedParams) -> None:
    ls.status.ready = True
    ls.status.publish()
    ls.warming.started()
    ls.spawn(ls.status.poll())


@server.feature(types.SHUTDOWN)
async def on_shutdown(ls: BankedServer, params: None) -> None:
    for task in list(ls.background):
        task.cancel()
    await ls.completion.close()
    await ls.link.close()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def on_configuration(ls: BankedServer, params: types.DidChangeConfigurationParams) -> None:
    ls.apply_settings(params.settings)


# -- documents -------------------------------------------------------------------------------


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def on_open(ls: BankedServer, params: types.DidOpenTextDocumentParams) -> None:
    ls.documents.opened(params.text_document.uri, params.text_document.text)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def on_change(ls: BankedServer, params: types.DidChangeTextDocumentParams) -> None:
    ls.completion.changed(params.text_document.uri)
    ls.documents.typed(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
def on_save(ls: BankedServer, params: types.DidSaveTextDocumentParams) -> None:
    ls.documents.send(params.text_document.uri, None)  # saved: the file on disk is the truth again


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def on_close(ls: BankedServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.completion.closed(params.text_document.uri)
    ls.documents.send(params.text_document.uri, None)


# -- completion ------------------------------------------------------------------------------


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def on_inline_completion(ls: BankedServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    return await ls.completion.inline(params)


async def on_completion(ls: BankedServer, params: types.CompletionParams) -> types.CompletionList:
    return await ls.completion.classic(params)


# -- code actions ----------------------------------------------------------------------------


@server.feature(
    types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(code_action_kinds=KINDS, resolve_provider=True)
)
def on_code_action(ls: BankedServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    return ls.actions.offer(params)


@server.feature(types.CODE_ACTION_RESOLVE)
async def on_code_action_resolve(ls: BankedServer, action: types.CodeAction) -> types.CodeAction:
    try:
        return await ls.actions.resolve(action)
    except UserFacingError as exc:
        raise lsp_error(exc) from exc


# -- commands (the command palette) ----------------------------------------------------------

Handler = Callable[..., Awaitable[Any]]


def lsp_error(exc: Exception) -> Exception:
    return JsonRpcException(str(exc), code=-32803)  # LSP's RequestFailed: the editor shows the message


def command(name: str) -> Callable[[Handler], Handler]:
    """Register a palette command whose failures reach the editor as a readable error."""

    def wrap(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def run(ls: BankedServer, *args: Any) -> Any:
            try:
                return await fn(ls, *args)
            except (UserFacingError, DaemonUnavailable, rpc.RemoteError) as exc:
                raise lsp_error(exc) from exc

        server.command(name)(run)
        return fn

    return wrap


@command("banked.explain")
async def cmd_explain(ls: BankedServer, *args: Any) -> Any:
    uri, rng, _ = command_target(args)
    return await ls.actions.explain(uri, rng)


@command("banked.refactor")
async def cmd_refactor(ls: BankedServer, *args: Any) -> Any:
    uri, rng, arg = command_target(args)
    instruction = arg.get("instruction") or None
    preset = protocol.Preset(arg["preset"]) if arg.get("preset") in set(protocol.Preset) else None
    if instruction is None and preset is None:
        preset = await ls.actions.ask_preset()
        if preset is None:
            return {"applied": False, "reason": "no instruction"}
    edit, result = await ls.actions.refactor_edit(uri, rng, instruction, preset)
    applied = await ls.actions.apply(edit, "banked: refactor")
    return {"applied": applied, "start_line": result.start_line, "end_line": result.end_line}


@command("banked.writeTests")
async def cmd_write_tests(ls: BankedServer, *args: Any) -> Any:
    uri, rng, _ = command_target(args)
    return {"applied": await ls.actions.apply(await ls.actions.tests_edit(uri, rng), "banked: write tests")}


@command("banked.warmWorkspace")
async def cmd_warm(ls: BankedServer, *args: Any) -> Any:
    return await ls.warming.warm()


@server.command("banked.focus")
def cmd_focus(ls: BankedServer, *args: Any) -> dict[str, Any]:
    """The client's window gained (`{"focused": true}`) or lost focus: see lsp/features/warming.py."""
    arg = args[0] if args and isinstance(args[0], dict) else {}
    ls.warming.focus_changed(bool(arg.get("focused", True)))
    return {"focused": ls.warming.focused, "warm_here": ls.warming.holds_this_window()}


@server.command("banked.status")
async def cmd_status(ls: BankedServer, *args: Any) -> dict[str, Any]:
    try:
        st = await ls.status.refresh(autostart=True)
    except (DaemonUnavailable, rpc.RemoteError) as exc:
        return {"state": ls.status.state, "detail": str(exc), "enabled": ls.settings.enabled}
    return {"state": ls.status.state, "enabled": ls.settings.enabled, "daemon": protocol.encode(st)}


@command("banked.restartDaemon")
async def cmd_restart(ls: BankedServer, *args: Any) -> Any:
    return await ls.restart_daemon()


@server.command("banked.toggleCompletions")
def cmd_toggle(ls: BankedServer, *args: Any) -> dict[str, Any]:
    ls.apply_settings({"enabled": not ls.settings.enabled})
    return {"enabled": ls.settings.enabled}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="banked-lsp", description="The banked language server (stdio).")
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--stdio", action="store_true", help="talk LSP on stdin/stdout (the default)")
    parser.parse_args()
    level = logging.DEBUG if os.environ.get("BANKED_DEBUG") else logging.INFO
    logging.basicConfig(
        level=level,
        filename=str(paths.private_file(paths.log_dir() / "lsp.log")),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    # pygls logs every message at INFO, buffer contents included: never on disk unless debugging.
    logging.getLogger("pygls").setLevel(level if os.environ.get("BANKED_DEBUG") else logging.WARNING)
    server.start_io()
