"""Named crash points, so the crash-loop test can kill the daemon exactly where a fault would hurt.

`BANKED_CRASH_AT=<name>` makes the process SIGKILL itself when it reaches that
point; unset (always, outside tests) a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "BANKED_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
