# PYTHON_ARGCOMPLETE_OK
"""`banked`: the command line. Talks to the daemon, starting it when none runs.

The parser is a table: each command with its help and its arguments, each
argument with a description, so `--help` answers every question and shell
completion (argcomplete) knows them all.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from banked.daemon import __version__, config
from banked.daemon.cli import commands as c
from banked.daemon.cli.commands import CliError, parse_location, parse_range
from banked.daemon.cli.console import err
from banked.daemon.cli.system_service import ServiceError
from banked.daemon.engines import model_store
from banked.daemon.ipc import rpc
from banked.daemon.ipc.client import DaemonUnavailable

__all__ = ["build_parser", "main", "parse_location", "parse_range"]

Arg = tuple[tuple[str, ...], dict[str, Any]]

JSON: Arg = (("--json",), {"action": "store_true", "help": "print the result as JSON (for scripts and editors)"})
WORKSPACE: Arg = (
    ("--workspace",),
    {"metavar": "DIR", "help": "the workspace root (default: the nearest warmed root, else the git repository)"},
)
FORCE_ROOT: Arg = (("--force",), {"action": "store_true", "help": "also warm your home directory or /"})

COMMANDS: list[tuple[str, Callable[[argparse.Namespace], int], str, list[Arg]]] = [
    ("serve", c.cmd_serve, "run the daemon in the foreground",
     [(("--log-file",), {"action": "store_true", "help": "also log to the log dir (the system service does)"})]),
    ("stop", c.cmd_stop, "stop the daemon (it writes its snapshot first)", []),
    ("status", c.cmd_status, "engine, cache and workspaces of the running daemon", [JSON]),
    ("warm", c.cmd_warm, "load a workspace into the cache (a progress bar while it prefills)",
     [(("dir",), {"help": "the workspace's root folder"}), FORCE_ROOT, JSON]),
    ("complete", c.cmd_complete, "complete at FILE:LINE:COL (lines and columns count from 1)",
     [(("location",), {"help": "FILE:LINE:COL, e.g. src/app.py:12:9"}), WORKSPACE,
      (("--max-tokens",), {"type": int, "default": 0, "help": "most tokens to generate (default: config max_tokens)"}),
      (("--max-lines",), {"type": int, "default": None,
                          "help": "most lines in the completion (default: 1 mid-line, else config max_lines)"}),
      JSON]),
    ("explain", c.cmd_explain, "explain FILE:START-END, FILE:LINE (the definition around it) or FILE",
     [(("target",), {"help": "FILE:START-END, FILE:LINE or FILE"}), WORKSPACE, JSON]),
    ("refactor", c.cmd_refactor, "rewrite FILE:START-END as instructed; prints a diff",
     [(("target",), {"help": "FILE:START-END"}), (("instruction",), {"help": "what to change, in words"}),
      (("--apply",), {"action": "store_true", "help": "write the change (refused if the file changed meanwhile)"}),
      WORKSPACE, JSON]),
    ("doctor", c.cmd_doctor, "check the installation, the model, the daemon and the service; say what to fix",
     [JSON]),
    ("demo", c.cmd_demo, "warm a sample workspace; complete, explain and refactor in it", []),
    ("team-server", c.cmd_team_server, "serve the model to a team: llama.cpp's server, N slots, an API key",
     [(("--model",), {"help": "a GGUF file (default: the embedded model)"}),
      (("--parallel",), {"type": int, "default": 4, "help": "users served at once, one slot each (default 4)"}),
      (("--per-user",), {"type": int, "default": 32768, "help": "tokens of context per user (default 32768)"}),
      (("--host",), {"default": "127.0.0.1", "help": "address to listen on (0.0.0.0: every interface)"}),
      (("--port",), {"type": int, "default": 8080, "help": "port (default 8080)"}),
      (("--threads",), {"type": int, "default": 0, "help": "CPU threads (default: llama.cpp's choice)"}),
      (("--key-env",), {"default": "BANKED_API_KEY",
                        "help": "the variable users keep the key in (its value here, if set, is the key)"}),
      (("--no-key",), {"action": "store_true", "help": "no API key (loopback or a trusted network only)"})]),
]  # fmt: skip

GROUPS: list[tuple[str, str, list[tuple[str, Callable[[argparse.Namespace], int], str, list[Arg]]]]] = [
    ("model", "model tools", [
        ("convert", c.cmd_model_convert, "make an EXL2 model from an HF directory or a GGUF file (needs a GPU)",
         [(("src",), {"help": "an HF safetensors directory or a GGUF file"}),
          (("out",), {"help": "the EXL2 directory to write"}),
          (("--bits",), {"type": float, "default": 4.0, "help": "bits per weight (default 4.0)"}),
          (("--head-bits",), {"type": int, "default": 6, "help": "bits of the output layer (default 6)"}),
          (("--rows",), {"type": int, "default": 0, "help": "calibration rows (fewer: faster, coarser)"}),
          (("--length",), {"type": int, "default": 0, "help": "calibration tokens per row"})]),
    ]),
    ("service", "run the daemon as a per-user background service (systemd, launchd)", [
        ("install", c.cmd_service_install, "write and enable the user units (socket-activated on systemd)",
         [(("--force",), {"action": "store_true", "help": "overwrite units you edited"}),
          (("--no-start",), {"action": "store_true", "help": "write the files only"})]),
        ("uninstall", c.cmd_service_uninstall, "disable and remove the units", []),
        ("status", c.cmd_service_status, "the unit files, and whether the service and the daemon run", [JSON]),
    ]),
]  # fmt: skip


def _add(sub: Any, name: str, fn: Callable[[argparse.Namespace], int], help: str, args: list[Arg]) -> None:
    s = sub.add_parser(name, help=help, description=help)
    for flags, kw in args:
        s.add_argument(*flags, **kw)
    s.set_defaults(fn=fn)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="banked",
        description="A local coding assistant with the whole workspace warm in the model's KV cache.",
        epilog='Shell completion: eval "$(register-python-argcomplete banked)" (bash/zsh).',
    )
    p.add_argument("--version", action="version", version=f"banked {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", help="what to do (banked COMMAND --help)")
    for name, fn, help, args in COMMANDS:
        _add(sub, name, fn, help, args)
    for group, help, members in GROUPS:
        g = sub.add_parser(group, help=help, description=help).add_subparsers(
            dest=f"{group}_cmd", required=True, metavar="COMMAND", help=f"which {group} command"
        )
        for name, fn, sub_help, args in members:
            _add(g, name, fn, sub_help, args)
    return p


def warn_about_daemon_settings() -> None:
    """`BANKED_MAX_LINES=3 banked complete …` changes nothing in a daemon that already runs: say so."""
    from banked.daemon.ipc import protocol
    from banked.daemon.ipc.client import Client

    try:
        mine = config.load()
        with Client.connect() as client:
            client.sock.settimeout(5)
            theirs = client.request(protocol.STATUS).settings
    except (OSError, ValueError, config.ConfigError, rpc.RemoteError, DaemonUnavailable):
        return  # no daemon yet: it starts with this environment
    differ = [f"BANKED_{k.upper()}" for k, v in vars(mine).items() if k in theirs and theirs[k] != v]
    if differ:
        err.print(
            f"[yellow]note:[/] {', '.join(differ)} {'is' if len(differ) == 1 else 'are'} read when the daemon starts; "
            "the running daemon keeps its own (`banked stop` to restart it; for one command, use --max-lines or "
            "--max-tokens)"
        )


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    try:
        import argcomplete

        argcomplete.autocomplete(parser)
    except ImportError:
        pass
    args = parser.parse_args(argv)
    fn: Callable[[argparse.Namespace], int] = args.fn
    if args.cmd in ("complete", "explain", "refactor", "warm"):
        warn_about_daemon_settings()
    try:
        code = fn(args)
    except (CliError, DaemonUnavailable, model_store.ModelError, config.ConfigError, ServiceError) as exc:
        err.print(f"[red]banked:[/] {exc}")
        code = 2
    except rpc.RemoteError as exc:
        err.print(f"[red]banked {args.cmd}:[/] {exc}")
        code = 1
    except (ConnectionError, BrokenPipeError) as exc:
        err.print(
            f"[red]banked {args.cmd}:[/] the daemon closed the connection ({type(exc).__name__}); it may have "
            "crashed: see `banked status` and its log, then try again"
        )
        code = 1
    except KeyboardInterrupt:
        err.print("cancelled")
        code = 130
    sys.exit(code)
