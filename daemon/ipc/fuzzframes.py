"""Random msgpack-RPC frames, seeded: what tests/test_fuzz.py and bench/abuse.py throw at the daemon.

Well-formed requests and notifications with junk params (unhashable map keys, deep nesting, huge ints,
NaN, paths outside any workspace), decodable msgpack that is not msgpack-RPC, and bytes that are not
msgpack at all. Shipped with the package, as engines/tinymodel.py is, so the test and the bench throw
the same frames.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import msgpack
from banked.daemon.ipc import rpc

METHODS = ["ping", "status", "warm", "complete", "explain", "refactor", "write_tests", "overlay", "cancel", "nope"]


def junk(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.randint(-(2**63), 2**64 - 1)
    if kind == 1:
        return rng.choice([None, True, False, 0.5, float("inf"), float("nan")])
    if kind == 2:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(12)))
    if kind == 3:
        return rng.randbytes(rng.randrange(12))
    if kind == 4:
        return rng.choice(["/", "/etc/passwd", "../x", "", "path", "line", "col", "root", "id", "text"])
    if kind == 5:
        return rng.randrange(-3, 3)
    if kind == 6:
        return [junk(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == 7:
        return {key(rng): junk(rng, depth + 1) for _ in range(rng.randrange(5))}
    nested: Any = 0
    for _ in range(rng.randrange(500)):  # msgpack packs up to 511 levels
        nested = [nested]
    return nested


def key(rng: random.Random) -> Any:
    """A map key: usually a parameter name; sometimes one msgpack allows and Python cannot hash (a tuple
    packs as an array, which the daemon unpacks as a list)."""
    choice = rng.randrange(6)
    if choice == 0:
        return tuple(rng.randrange(9) for _ in range(rng.randrange(3)))
    if choice == 1:
        return rng.randrange(-5, 5)
    return rng.choice(["path", "id", "line", "col", "text", "root", "start_line", "instruction"])


def frame(rng: random.Random) -> tuple[bytes, bool]:
    """One random frame and whether it is a well-formed message (which must not close the connection)."""
    shape = rng.randrange(10)
    if shape < 5:  # well-formed requests with junk params
        return rpc.request(rng.randrange(1, 2**31), rng.choice(METHODS), junk(rng)), True
    if shape < 7:  # notifications, cancels with junk ids included
        method = rng.choice(["cancel", "cancel", "overlay", "nope"])
        params = {"id": junk(rng)} if method == "cancel" and rng.random() < 0.7 else junk(rng)
        return rpc.notification(method, params), True
    if shape < 9:  # decodable msgpack that is not msgpack-RPC
        with contextlib.suppress(Exception):
            return msgpack.packb(junk(rng), use_bin_type=True), False
        return b"\xc1", False
    return rng.randbytes(rng.randrange(1, 64)), False  # not msgpack at all
