"""Reusing completions without the model: typing through a suggestion, and a cache of recent ones.

Both ends of the wire keep one of these (the language server where the
keystrokes arrive, the daemon for every other client), so it lives with the
protocol. A completion is stored with the buffer it was made for, split at the
cursor: the text before it and the text after it. It answers a later request
when the text after the cursor is the same and the text before it is the
stored one plus a prefix of the completion (the user typed some of it), or the
stored one exactly (a backspace, an undo, a retype): the answer is what is left
of the completion. A completion is never offered where it no longer fits.

As Tabby and llama.vim do: an LRU of recent entries; lookups compare hashes and
lengths first, so a miss costs microseconds however long the buffer.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

MAX_TYPED = 256  # characters typed through at most (llama.vim scans 128 back)


def _h(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass(frozen=True)
class Entry:
    scope: str  # the buffer's identity (a URI, or workspace + path)
    before_len: int
    before_hash: bytes
    before_tail: str  # the last MAX_TYPED characters before the cursor
    after_hash: bytes
    text: str  # the completion


@dataclass(frozen=True)
class Hit:
    text: str  # what is left to show
    typed: int  # characters of the completion the user has typed since


class CompletionCache:
    def __init__(self, size: int = 100):
        self.size = size
        self._entries: OrderedDict[tuple[str, bytes, bytes], Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, scope: str, before: str, after: str, text: str) -> None:
        """Remember `text` as the completion after `before` (with `after` following the cursor)."""
        if not text:
            return
        bh = _h(before)
        key = (scope, bh, _h(after))
        self._entries[key] = Entry(scope, len(before), bh, before[-MAX_TYPED:], key[2], text)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def get(self, scope: str, before: str, after: str) -> Hit | None:
        """The rest of a stored completion that still fits this buffer, or None."""
        ah = _h(after)
        best: Entry | None = None
        for e in reversed(self._entries.values()):  # the most recent first
            if e.scope != scope or e.after_hash != ah:
                continue
            typed = len(before) - e.before_len
            if not 0 <= typed < len(e.text) or typed > MAX_TYPED:
                continue
            if typed and before[-typed:] != e.text[:typed]:
                continue
            if before[max(0, e.before_len - len(e.before_tail)) : e.before_len] != e.before_tail:
                continue  # cheap check before the full hash
            if _h(before[: e.before_len]) != e.before_hash:
                continue
            best = e
            break
        if best is None:
            self.misses += 1
            return None
        self.hits += 1
        key = (best.scope, best.before_hash, best.after_hash)
        self._entries.move_to_end(key)
        typed = len(before) - best.before_len
        return Hit(best.text[typed:], typed)

    def forget(self, scope: str) -> None:
        """Drop a buffer's entries (it closed)."""
        for key in [k for k in self._entries if k[0] == scope]:
            del self._entries[key]
