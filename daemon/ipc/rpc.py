"""msgpack-RPC messages (the spec Neovim uses), shared by the daemon and its clients.

[0, id, method, params]   request
[1, id, error, result]    response (error is None or {"code", "message"})
[2, method, params]       notification (streamed text carries the request id)
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

import msgpack

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2
MAX_FRAME = 16 << 20  # a frame larger than this closes the connection


class ProtocolError(ValueError):
    """The peer sent something that is not msgpack-RPC; the connection is closed."""


class RemoteError(RuntimeError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code

    @classmethod
    def from_response(cls, error: Any) -> RemoteError:
        """The error of a response frame (a {"code", "message"} map, or anything else a peer sent)."""
        err = error if isinstance(error, dict) else {"message": str(error)}
        return cls(str(err.get("code", "error")), str(err.get("message", err)))


@dataclass
class Message:
    kind: int
    id: int | None
    method: str | None
    params: Any
    error: Any = None
    result: Any = None


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def request(msgid: int, method: str, params: Any) -> bytes:
    return pack([REQUEST, msgid, method, params])


def response(msgid: int, error: dict[str, str] | None, result: Any) -> bytes:
    return pack([RESPONSE, msgid, error, result])


def notification(method: str, params: Any) -> bytes:
    return pack([NOTIFICATION, method, params])


def unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, max_buffer_size=MAX_FRAME, strict_map_key=False)


def parse(obj: Any) -> Message:
    """Validate one decoded frame's shape."""
    if not isinstance(obj, list | tuple) or not obj:
        raise ProtocolError("frame is not an array")
    kind = obj[0]
    if kind == REQUEST and len(obj) == 4 and isinstance(obj[1], int) and isinstance(obj[2], str):
        return Message(REQUEST, obj[1], obj[2], obj[3])
    if kind == RESPONSE and len(obj) == 4 and isinstance(obj[1], int):
        return Message(RESPONSE, obj[1], None, None, error=obj[2], result=obj[3])
    if kind == NOTIFICATION and len(obj) == 3 and isinstance(obj[1], str):
        return Message(NOTIFICATION, None, obj[1], obj[2])
    raise ProtocolError(f"not a msgpack-RPC message: {describe(obj)}")


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 3, 40, 40, 4, 4


def describe(obj: object) -> str:
    """A short, safe description for logs and errors: bounded in depth and length (a deeply nested
    frame must not make building an error message recurse)."""
    return _SHORT.repr(obj)[:120]
