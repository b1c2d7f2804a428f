"""The `banked` commands: each takes its parsed arguments and returns an exit status."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from banked.daemon import config, paths
from banked.daemon.cli import doctor, system_service
from banked.daemon.cli.console import client, err, out, stream_call
from banked.daemon.engines import model_store
from banked.daemon.ipc import protocol
from banked.daemon.ipc.client import Client, DaemonUnavailable, connect, wait_for_exit
from msgspec import Struct


class CliError(Exception):
    pass


# -- arguments ---------------------------------------------------------------------------------


def _file(path: str) -> Path:
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        raise CliError(f"{path} is a directory; name a file")
    return p


def parse_location(spec: str) -> tuple[Path, int, int]:
    """FILE:LINE:COL, both counted from 1 (as editors show them)."""
    m = re.fullmatch(r"(.+):(\d+):(\d+)", spec)
    if not m:
        raise CliError(f"expected FILE:LINE:COL (lines and columns count from 1), got {spec!r}")
    line, col = int(m.group(2)), int(m.group(3))
    if line < 1 or col < 1:
        raise CliError(f"{spec}: lines and columns count from 1")
    return _file(m.group(1)), line, col


def parse_range(spec: str, required: bool) -> tuple[Path, int | None, int | None]:
    """FILE:START-END (1-based, inclusive); unless `required`, also FILE:LINE (see `parse_target`) or FILE."""
    m = re.fullmatch(r"(.+):(\d+)-(\d+)", spec)
    if m:
        a, b = int(m.group(2)), int(m.group(3))
        if a < 1 or b < a:
            raise CliError(f"bad line range {a}-{b}: lines count from 1 and START <= END")
        return _file(m.group(1)), a, b
    if required:
        raise CliError(f"expected FILE:START-END (lines count from 1), got {spec!r}")
    return _file(spec), None, None


def parse_target(spec: str, workspace: str | None) -> protocol.ChatParams:
    """For explain: FILE:START-END, FILE:LINE (the definition around that line) or FILE (all of it)."""
    m = re.fullmatch(r"(.+):(\d+)", spec)
    if m and not Path(spec).exists():
        line = int(m.group(2))
        if line < 1:
            raise CliError(f"{spec}: lines count from 1")
        return protocol.ChatParams(path=str(_file(m.group(1))), cursor_line=line - 1, workspace=workspace)
    path, a, b = parse_range(spec, required=False)
    return protocol.ChatParams(path=str(path), start_line=a, end_line=b, workspace=workspace)


def atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".banked")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- commands ----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from banked.daemon.engines import EngineError, make_engine
    from banked.daemon.serving.server import AlreadyRunning, serve
    from banked.daemon.serving.service import Daemon

    level = logging.DEBUG if os.environ.get("BANKED_DEBUG") else logging.INFO
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if sys.stderr.isatty() or args.log_file:
        handlers.append(logging.FileHandler(paths.private_file(paths.log_dir() / "daemon.log")))
    logging.basicConfig(level=level, handlers=handlers, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    activated = os.environ.get("LISTEN_PID") == str(os.getpid())  # the socket systemd passed is ours to serve
    try:
        if not activated:
            c = Client.connect()
            c.sock.settimeout(10)
            pid = c.request(protocol.PING).pid
            c.close()
            err.print(f"a banked daemon is already running (pid {pid}) on {paths.socket_path()}")
            return 1
    except (OSError, DaemonUnavailable):
        pass
    try:
        cfg = config.load()
        engine = make_engine(cfg)
        asyncio.run(serve(Daemon(cfg, engine)))
    except AlreadyRunning as exc:
        err.print(str(exc))
        return 1
    except (EngineError, model_store.ModelError, config.ConfigError, paths.SocketPathError) as exc:
        err.print(f"[red]banked serve:[/] {exc}")
        return 1
    return 0


def cmd_team_server(args: argparse.Namespace) -> int:
    from banked.daemon.cli.team_server import cmd_team_server as run

    return run(args)


def cmd_stop(args: argparse.Namespace) -> int:
    try:
        c = connect(autostart=False)
    except DaemonUnavailable:
        out.print("no banked daemon is running")
        return 0
    with c:
        pid = c.request(protocol.PING).pid
        c.request(protocol.STOP)
    with err.status("waiting for the daemon to write its snapshot and exit…"):
        if not wait_for_exit():
            raise CliError(f"the daemon (pid {pid}) did not exit within 120 s; see {paths.log_dir()}")
    out.print(f"stopped the banked daemon (pid {pid}); its snapshot is written")
    return 0


def print_json(value: Any) -> None:
    print(json.dumps(protocol.encode(value) if isinstance(value, Struct) else value, indent=2))


def cmd_status(args: argparse.Namespace) -> int:
    try:
        c = connect(autostart=False)
    except DaemonUnavailable as exc:
        if args.json:
            print(json.dumps({"running": False}))
            return 1
        out.print(str(exc))
        return 1
    with c:
        st = c.request(protocol.STATUS)
    if args.json:
        print_json({"running": True, **protocol.encode(st)})
        return 0
    e = st.engine
    out.print(f"[bold]banked[/] {st.version} — daemon pid {st.pid}, up {st.uptime_s:.0f}s")
    out.print(f"engine [bold]{e.name}[/] · model {e.model} · device {e.device}")
    out.print(
        f"cache {st.cached_tokens:,} / {st.capacity:,} tokens ({e.bytes_per_token * st.cached_tokens / 2**20:.1f} MiB)"
    )
    x = e.extra
    request_step = f", a request's own {x['request_chunk']}" if "request_chunk" in x else ""
    out.print(f"prefill step {e.chunk} tokens{request_step}")
    if "vram_weights_bytes" in x:
        out.print(
            f"VRAM: weights {x['vram_weights_bytes'] / 2**30:.2f} GiB, "
            f"{x['cache_type']} cache {x['vram_cache_bytes'] / 2**30:.2f} GiB"
        )
    remote = x.get("remote")
    if isinstance(remote, dict):
        out.print(remote_line(remote), soft_wrap=True)
    for w in st.workspaces:
        mark = "[bold green]●[/] " if w.active else "  "
        out.print(f"{mark}{w.root}", soft_wrap=True)
        out.print(f"    {w.files} files, {w.tokens or '-'} tokens, snapshot {w.snapshot}", soft_wrap=True)
    out.print(f"socket {st.socket}", soft_wrap=True)
    return 0


def remote_line(r: dict[str, Any]) -> str:
    """The remote server in one or two lines of `banked status`."""
    state = "reachable" if r.get("reachable") else "[red]unreachable[/]"
    ctx = f"{r['n_ctx']:,} tokens" if isinstance(r.get("n_ctx"), int) else "?"
    line = f"server {r.get('url')} ({r.get('kind')}, {r.get('model')}, {ctx}, slot {r.get('slot')}): {state}"
    if r.get("recent_reuse") is not None:
        line += (
            f"\n  last {r['recent_requests']} requests: {100 * r['recent_reuse']:.1f} % of prompt tokens from its "
            f"cache ({r['recent_computed_tokens']:,} computed); last one {r['last_computed_tokens']:,} computed"
        )
    if r.get("problem"):
        line += f"\n  [yellow]answering from the local engine meanwhile:[/] {r['problem']}"
    return line


def cmd_warm(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    with client() as c:
        res = stream_call(
            c, protocol.WARM, protocol.WarmParams(root=str(root), force=args.force), progress_label="warming"
        )
    if args.json:
        print_json(res)
    else:
        out.print(
            f"warmed {res.root}: {res.files} files, {res.tokens:,} tokens "
            f"({res.prefilled_tokens:,} prefilled) in {res.seconds:.2f}s"
        )
        if res.dropped:
            out.print(f"{len(res.dropped)} files did not fit the token budget")
        for warning in res.warnings:
            err.print(f"[yellow]warning:[/] {warning}")
    return 0


def workspace_arg(args: argparse.Namespace) -> str | None:
    return str(Path(args.workspace).resolve()) if args.workspace else None


def cmd_complete(args: argparse.Namespace) -> int:
    path, line, col = parse_location(args.location)
    params = protocol.CompleteParams(
        path=str(path),
        line=line - 1,
        col=col - 1,
        workspace=workspace_arg(args),
        max_tokens=args.max_tokens or None,
        max_lines=args.max_lines,
    )
    with client() as c, err.status(f"completing at {path.name}:{line}:{col}…"):
        res = stream_call(c, protocol.COMPLETE, params, show=False, progress_label="prefilling the workspace first")
    if args.json:
        print_json(res)
    else:
        print(res.text)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    params = parse_target(args.target, workspace_arg(args))
    with client() as c:
        res = stream_call(c, protocol.EXPLAIN, params, show=not args.json)
    if args.json:
        print_json(res)
    else:
        out.print()
    return 0


def cmd_refactor(args: argparse.Namespace) -> int:
    path, start, end = parse_range(args.target, required=True)
    params = protocol.RefactorParams(
        path=str(path), start_line=start, end_line=end, instruction=args.instruction, workspace=workspace_arg(args)
    )
    with client() as c, err.status("refactoring…"):
        res = stream_call(c, protocol.REFACTOR, params, show=False)
    old = path.read_bytes().decode("utf-8")  # exactly as on disk: CRLF files stay CRLF
    if hashlib.sha256(old.encode()).hexdigest() != res.digest:
        raise CliError(f"{path} changed while the refactor ran; nothing written, run it again")
    new = protocol.replace_lines(old, res.start_line, res.end_line, res.replacement)
    diff = "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{res.path}", f"b/{res.path}"
        )
    )
    if args.json:
        print_json({**protocol.encode(res), "diff": diff})
    else:
        print(diff or "(no change)", end="" if diff else "\n")
    if args.apply and diff:
        atomic_write(path, new)
        err.print(f"applied to {path}")
    return 0


def cmd_model_convert(args: argparse.Namespace) -> int:
    from banked.daemon.cli.convert import ConvertError, convert

    out_dir = Path(args.out).resolve()
    try:
        with err.status("converting…") as status:
            convert(
                Path(args.src).resolve(),
                out_dir,
                args.bits,
                args.head_bits,
                args.rows,
                args.length,
                report=lambda line: status.update(line[:100]),
            )
    except ConvertError as exc:
        raise CliError(str(exc)) from exc
    out.print(f'EXL2 model written to {out_dir}; use it with model = "{out_dir}" (engine auto or exl2)')
    return 0


def cmd_service_install(args: argparse.Namespace) -> int:
    for line in system_service.install(force=args.force, start=not args.no_start):
        out.print(line, soft_wrap=True)
    return 0


def cmd_service_uninstall(args: argparse.Namespace) -> int:
    for line in system_service.uninstall() or ["nothing to remove"]:
        out.print(line, soft_wrap=True)
    return 0


def cmd_service_status(args: argparse.Namespace) -> int:
    st = system_service.status()
    if args.json:
        print(json.dumps(st))
        return 0
    for path, state in dict(st["files"]).items():  # type: ignore[call-overload]
        out.print(f"{state:8} {path}", soft_wrap=True)
    for unit, active in dict(st.get("active", {})).items():  # type: ignore[call-overload]
        out.print(f"{active:8} {unit}")
    out.print("the daemon is running" if st["running"] else "the daemon is not running (it starts on first use)")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = doctor.run()
    if args.json:
        print(json.dumps(doctor.as_json(checks), indent=2))
    else:
        colour = {"ok": "green", "warn": "yellow", "error": "red"}
        for c in checks:
            out.print(f"[{colour[c.status]}]{c.status:5}[/] {c.name}: {c.detail}", soft_wrap=True)
            if c.fix:
                out.print(f"      fix: {c.fix}", soft_wrap=True)
    return 1 if any(c.status == "error" for c in checks) else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from banked.daemon.cli.demo import run_demo

    return run_demo()
