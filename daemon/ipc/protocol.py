"""The daemon's protocol: one typed structure per method (its params and its result), and the notifications.

Both ends use these types: the daemon validates every request's params into
its params structure before a handler sees them (a wrong type, a missing field,
a negative line is a `bad_request` error naming the parameter), and clients
read results as typed values rather than by string key. The transport
(msgpack-RPC framing) is `rpc.py`; this module is what the frames carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from msgspec import Meta, Struct

NonNegative = Annotated[int, Meta(ge=0)]
Positive = Annotated[int, Meta(ge=1)]

# -- notifications ---------------------------------------------------------------------------

TEXT = "banked/text"  # streamed text of a request: TextNote
PROGRESS = "banked/progress"  # progress of a request (prefill): ProgressNote
CANCEL = "cancel"  # client -> daemon: CancelNote
OVERLAY = "overlay"  # client -> daemon, fire and forget: OverlayParams
ACTIVE = "active"  # client -> daemon, fire and forget: ActiveParams (the user is typing in this file)


class TextNote(Struct):
    id: int
    text: str


class ProgressNote(Struct):
    id: int
    done: int
    total: int
    message: str


class CancelNote(Struct):
    id: int


# -- params ----------------------------------------------------------------------------------


class NoParams(Struct, kw_only=True):
    pass


class FileParams(Struct, kw_only=True):
    path: str  # absolute
    workspace: str | None = None  # the root it belongs to; None: the daemon finds it
    text: str | None = None  # the buffer's live text; None: the file on disk (or its unsaved overlay)


class WarmParams(Struct, kw_only=True):
    root: str
    force: bool = False  # also a root banked refuses by default ($HOME, /)


class CompleteParams(FileParams, kw_only=True):
    line: NonNegative  # 0-based
    col: NonNegative  # 0-based, in characters
    max_tokens: Positive | None = None
    max_lines: NonNegative | None = None  # None: the daemon decides (1 mid-line, else its max_lines)
    raw: bool = False  # skip post-processing (benches, tests)
    speculative: bool = False  # ahead of need (the next completion if this one is accepted): background priority
    reuse: bool = True  # may be answered from the daemon's cache of recent completions
    # lines to go on writing past a one-line answer at the end of its line (streamed, returned as `ahead`, not
    # part of `text`): the next line as if this one is accepted, without a new prefill
    lookahead: NonNegative = 0


class ChatParams(FileParams, kw_only=True):
    start_line: Positive | None = None  # 1-based, inclusive; neither given: the code around cursor_line
    end_line: Positive | None = None
    cursor_line: NonNegative | None = None  # 0-based
    max_tokens: Positive | None = None


class Preset(StrEnum):
    """Refactors the editors offer by name; the instruction texts live in context/prompts.py."""

    SIMPLIFY = "Simplify this code without changing what it does"
    ANNOTATE = "Add type annotations"
    NAMES = "Improve the names"
    ERRORS = "Handle errors explicitly"
    DOCSTRING = "Add docstrings"


class RefactorParams(ChatParams, kw_only=True):
    instruction: str | None = None
    preset: Preset | None = None  # used when no instruction is given


class OverlayParams(FileParams, kw_only=True):
    pass  # text None: the editor closed the buffer, the disk is the truth again


class ActiveParams(Struct, kw_only=True):
    """The user is typing in `path`, whether or not it needs the model: background work that would move what
    completions run after waits (`resync_idle_s`)."""

    path: str
    workspace: str | None = None


# -- results ---------------------------------------------------------------------------------


class PingResult(Struct, kw_only=True):
    pid: int
    version: str


class StopResult(Struct, kw_only=True):
    stopping: bool


class WarmResult(Struct, kw_only=True):
    root: str
    files: int
    skipped: dict[str, str]
    tokens: int
    dropped: list[str]
    prefilled_tokens: int
    seconds: float
    warnings: list[str] = []


class Timings(Struct, kw_only=True):
    reused_tokens: int
    prefilled_tokens: int
    generated_tokens: int
    ttft_ms: float
    total_ms: float
    engine: str
    model: str


class CompleteResult(Timings, kw_only=True):
    text: str  # post-processed: what to insert
    raw_text: str  # what the model wrote
    decision: str  # why one line or a block
    path: str  # relative to the workspace
    workspace: str
    daemon_ms: float  # all of this request's time in the daemon
    cached: bool = False  # answered from the cache of recent completions, without the model
    ahead: str = ""  # the `lookahead` lines the model wrote after `text` and its line break ("" if none)


class ChatResult(Timings, kw_only=True):
    path: str
    start_line: int
    end_line: int
    original: str  # the selected lines as the model saw them
    digest: str  # sha256 of the whole buffer the answer is for
    workspace: str


class ExplainResult(ChatResult, kw_only=True):
    text: str


class RefactorResult(ChatResult, kw_only=True):
    replacement: str  # the new text of lines start_line..end_line
    answer: str  # the model's whole answer


class WriteTestsResult(ChatResult, kw_only=True):
    code: str
    answer: str


class OverlayResult(Struct, kw_only=True):
    path: str
    overlay: bool


class ActiveResult(Struct, kw_only=True):
    known: bool  # the file is in a workspace the daemon holds


class EngineInfo(Struct, kw_only=True):
    """What an engine is (engines fill it in; `status` reports it)."""

    name: str
    model: str
    device: str
    n_ctx: int
    bytes_per_token: int
    fingerprint: str
    chunk: int  # tokens per prefill step: the longest a completion waits for background work
    extra: dict[str, Any] = {}


class WorkspaceStatus(Struct, kw_only=True):
    root: str
    active: bool
    files: int
    skipped: int
    tokens: int | None  # of the plan, when one is computed
    synced_tokens: int  # of `tokens`, how many the cache holds now
    dropped: int | None
    overlays: int
    snapshot: str
    snapshot_saved: float | None
    watches: int
    watch_limited: str | None
    watch_overflows: int


class StatusResult(Struct, kw_only=True):
    pid: int
    version: str
    uptime_s: float
    engine: EngineInfo
    cached_tokens: int
    capacity: int
    pending_jobs: int
    running_job: str | None
    queued_jobs: list[str]
    jobs: dict[str, int]
    workspaces: list[WorkspaceStatus]
    known_roots: list[str]
    socket: str
    snapshots_dir: str
    settings: dict[str, Any] = {}  # the configuration the daemon started with


# -- methods ---------------------------------------------------------------------------------

P = TypeVar("P", bound=Struct)
R = TypeVar("R", bound=Struct)


@dataclass(frozen=True)
class Method(Generic[P, R]):
    """A request's name with the types of its params and result."""

    name: str
    params: type[P]
    result: type[R]

    def decode_params(self, raw: Any) -> P:
        """Validated params; raises BadParams with a message that names the parameter."""
        try:
            return msgspec.convert({} if raw is None else raw, self.params, strict=True)
        except msgspec.ValidationError as exc:
            raise BadParams(friendly(str(exc))) from None

    def decode_result(self, raw: Any) -> R:
        return msgspec.convert(raw, self.result, strict=False)


PING = Method("ping", NoParams, PingResult)
STATUS = Method("status", NoParams, StatusResult)
STOP = Method("stop", NoParams, StopResult)
WARM = Method("warm", WarmParams, WarmResult)
COMPLETE = Method("complete", CompleteParams, CompleteResult)
EXPLAIN = Method("explain", ChatParams, ExplainResult)
REFACTOR = Method("refactor", RefactorParams, RefactorResult)
WRITE_TESTS = Method("write_tests", ChatParams, WriteTestsResult)
OVERLAY_METHOD = Method(OVERLAY, OverlayParams, OverlayResult)
ACTIVE_METHOD = Method(ACTIVE, ActiveParams, ActiveResult)
METHODS: dict[str, Method[Any, Any]] = {
    m.name: m
    for m in (PING, STATUS, STOP, WARM, COMPLETE, EXPLAIN, REFACTOR, WRITE_TESTS, OVERLAY_METHOD, ACTIVE_METHOD)
}


class BadParams(ValueError):
    """A request's params do not fit its method; the message names the parameter."""


def encode(value: Struct) -> Any:
    """A result or params as plain msgpack-able values."""
    return msgspec.to_builtins(value)


def friendly(message: str) -> str:
    """msgspec's validation message in the words the daemon has always used."""
    if m := re.fullmatch(r"Object missing required field `(\w+)`(?: - at `\$(.*)`)?", message):
        return f"missing parameter {m.group(1)!r}"
    if m := re.fullmatch(r"Expected `(.+?)`, got `(\w+)` - at `\$\.(\w+)`", message):
        return f"parameter {m.group(3)!r} has the wrong type (expected {m.group(1)}, got {m.group(2)})"
    if m := re.fullmatch(r"Expected `(\w+)` (.+?) - at `\$\.(\w+)`", message):
        return f"parameter {m.group(3)!r} must be {m.group(2)}"
    if m := re.fullmatch(r"Invalid enum value (.+) - at `\$\.(\w+)`", message):
        return f"parameter {m.group(2)!r} has no value {m.group(1)}"
    if message.startswith("Expected `object`"):
        return "params must be a map"
    return message


# -- applying a refactor ---------------------------------------------------------------------


def replace_lines(text: str, start: int, end: int, replacement: str) -> str:
    """`text` with lines start..end (1-based, inclusive) replaced, in the file's own line ending."""
    lines = text.splitlines(keepends=True)
    return "".join(lines[: start - 1]) + normalized_replacement(text, end, replacement) + "".join(lines[end:])


def normalized_replacement(text: str, end: int, replacement: str) -> str:
    """The replacement in the file's line ending, ending with one where the replaced lines were followed by
    more (what every place that applies a refactor must agree on: the CLI, the editor edit, the validator)."""
    eol = "\r\n" if "\r\n" in text else "\n"
    out = replacement.replace("\r\n", "\n").replace("\n", eol)
    if out and not out.endswith(eol) and end < len(text.splitlines()):
        out += eol
    return out
