"""The remote engine: the model runs on a team's server, the daemon keeps planning exactly as for a local one.

The daemon still owns the token plan (workspace prefix, focus segment, FIM tail) and tokenizes locally with
the model's own vocabulary (a GGUF read vocabulary-only: no weights, no compute), so it sends token ids and
the server's prefix cache sees the same prefix at every request: after an edit the server prefills only the
tail, as the local engine would. What the base class calls "the cache" is here what the server's slot holds
for this daemon: `prefill` makes the server compute it (in chunks the scheduler can step between), a
generation is one streamed request that prefills what the server lacks and then writes, and truncating is
bookkeeping (the next request's shared prefix is what the server keeps).

Snapshots are the server's: `save` asks it to write this daemon's slot to its `--slot-save-path` and keeps
only a small local note (which file, which tokens), so a user whose slot another user took, or a restarted
server, gets the workspace back from the server's disk instead of a re-prefill.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from banked.daemon.engines.base import Engine, EngineError, EngineInfo, Sampling, ShouldStop, never
from banked.daemon.engines.servers import Server, ServerError, ServerInfo, ServerUnreachable, Usage, connect

log = logging.getLogger(__name__)

PROBE = 'def fibonacci(n: int) -> list[int]:\n    """Ünïcode «quotes» and tabs\t."""\n    return [0, 1][:n]  # ok\n'


def read_api_key(env_name: str, file: str) -> str | None:
    """The server's API key: from the environment variable named by `remote_api_key_env`, else from
    `remote_api_key_file`, which must be readable by its owner only (a key never sits in config.toml)."""
    if env_name:
        value = os.environ.get(env_name)
        if value:
            return value.strip()
    if file:
        path = Path(file).expanduser()
        try:
            st = path.stat()
        except OSError as exc:
            raise EngineError(f"remote_api_key_file {path}: {exc.strerror}") from exc
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise EngineError(f"remote_api_key_file {path} is readable by others: `chmod 600 {path}`")
        return path.read_text().strip() or None
    return None


def user_key(root_hint: str = "") -> str:
    """A stable, opaque per-user key: routers keep a user on one replica by it; no name or path is sent."""
    raw = f"{getpass.getuser()}@{socket.gethostname()}|{root_hint}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


class RemoteEngine(Engine):
    """`Engine` over a server: prefills and generations are requests, the token bookkeeping is local."""

    generates_remotely = True

    def __init__(
        self,
        server: Server,
        vocab: Path,
        chunk: int = 2048,
        slot: int = -1,
        n_ctx: int = 0,
    ):
        super().__init__(chunk)
        import llama_cpp  # the vocabulary only: tokenizing locally keeps keystrokes off the network

        self.server = server
        try:
            self._vocab = llama_cpp.Llama(model_path=str(vocab), vocab_only=True, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"could not read the tokenizer from {vocab}: {exc}") from exc
        try:
            info = server.info()
        except ServerUnreachable as exc:
            raise EngineError(f"the remote server is unreachable: {exc}") from exc
        except ServerError as exc:
            raise EngineError(str(exc)) from exc
        self._check_tokenizer()
        self.server_info = info
        self.slot: int | None = slot if slot >= 0 else None  # None until the server picks one, then sticky
        ctx = min(n_ctx or info.n_ctx or 4096, info.n_ctx or n_ctx or 4096)
        self.last = Usage()  # what the last request cost on the server (status, doctor, benches)
        self.requests = 0
        self.history: list[tuple[int, int]] = []  # (reused, computed) of recent requests, for status and doctor
        self._mine: tuple[int, ...] | None = None  # the slot's counts after this daemon's last request
        self._saved: tuple[str, int, list[int]] | None = None  # (server file, tokens in it, prefix ids) last saved
        self.lost = 0  # times the slot was found taken or the server restarted
        self._bytes: dict[int, int] | None = None  # byte -> its byte-level token
        self._probed = (0.0, True)  # (when, whether the server answered a health check)
        self.info = EngineInfo(
            name="remote",
            model=info.model,
            device=f"{info.kind} at {server.http.url}",
            n_ctx=ctx,
            bytes_per_token=0,
            chunk=chunk,
            fingerprint=f"remote-{info.kind}-{_digest(server.http.url, info.model, str(ctx), self._vocab_digest())}",
            extra={"url": server.http.url, "kind": info.kind, "slots": info.slots, "build": info.build},
        )
        self._eos = {self._vocab.token_eos()}

    def _vocab_digest(self) -> str:
        return hashlib.sha256(json.dumps(self.tokenize(PROBE)).encode()).hexdigest()[:12]

    def _check_tokenizer(self) -> None:
        """The server must split text exactly as the daemon does, or the prefix it caches is not the one sent."""
        mine = self.tokenize(PROBE)
        try:
            theirs = self.server.tokenize(PROBE)
        except ServerError as exc:
            raise EngineError(f"could not check the server's tokenizer: {exc}") from exc
        if mine != theirs:
            raise EngineError(
                f"the server at {self.server.http.url} tokenizes differently from banked's local vocabulary "
                f"({len(theirs)} tokens against {len(mine)} for the same text): it serves another model family. "
                "Point remote_url at a Qwen2.5-Coder server, or set remote_tokenizer to the GGUF of its model"
            )

    # -- vocabulary (local) -----------------------------------------------------------------

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        if not text:
            return []
        return list(self._vocab.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def detokenize(self, ids: Sequence[int]) -> bytes:
        return bytes(self._vocab.detokenize(list(ids), special=False))

    @property
    def eos_ids(self) -> set[int]:
        return set(self._eos)

    # -- the server's cache -----------------------------------------------------------------

    def _note(self, usage: Usage) -> None:
        self.last = usage
        self.requests += 1
        self.history = [*self.history[-49:], (usage.cached, usage.prefilled)]
        if usage.slot is not None and usage.slot >= 0:
            self.slot = usage.slot  # sticky from now on: the server keeps this daemon's prefix there
        if self.slot is not None:
            try:
                self._mine = self.server.slot_state(self.slot)
            except ServerError:
                self._mine = None

    def served(self) -> tuple[int, int] | None:
        return self.last.cached, self.last.prefilled

    def report(self) -> dict[str, object]:
        """What `banked status` and `banked doctor` show: the server, and what its cache saved lately."""
        reused = sum(r for r, _ in self.history)
        computed = sum(c for _, c in self.history)
        now = time.monotonic()
        if now - self._probed[0] > 10:  # editors poll the status every 2 s: the server is asked at most every 10
            self._probed = (now, self.server.reachable())
        reachable = self._probed[1]
        return {
            "url": self.server.http.url,
            "kind": self.server_info.kind,
            "model": self.server_info.model,
            "n_ctx": self.info.n_ctx,
            "slots": self.server_info.slots,
            "slot": self.slot,
            "reachable": reachable,
            "requests": self.requests,
            "recent_requests": len(self.history),
            "recent_reused_tokens": reused,
            "recent_computed_tokens": computed,
            "recent_reuse": round(reused / (reused + computed), 4) if reused + computed else None,
            "last_reused_tokens": self.last.cached,
            "last_computed_tokens": self.last.prefilled,
            "slot_lost": self.lost,
        }

    def check(self) -> None:
        """Before a request: is the slot still this daemon's? Another user's request there, or a restarted
        server, means its cache is gone: restored from the server's disk when a save of it exists (seconds),
        otherwise forgotten here, so the request runs after what is left (the tail alone) and the workspace is
        prefilled again in the background, once."""
        if self.slot is None or self._mine is None or not self._ids:
            return
        try:
            now = self.server.slot_state(self.slot)
        except ServerError as exc:
            raise EngineError(str(exc)) from exc
        if now is None or now == self._mine:
            return
        self.lost += 1
        log.warning("server slot %d no longer holds this workspace (taken, or the server restarted)", self.slot)
        if self._saved is not None:
            name, n, ids = self._saved
            try:
                if self.server.restore_slot(self.slot, name) == n:
                    self._ids = list(ids)
                    self._mine = self.server.slot_state(self.slot)
                    log.info("restored %d tokens of this workspace from the server's disk (%s)", len(ids), name)
                    return
            except ServerError as exc:
                log.warning("could not restore slot %d from %s: %s", self.slot, name, exc)
        self._ids = []
        self._mine = None

    def _forward(self, ids: Sequence[int], want_logits: bool) -> None:
        """Prefill on the server: the whole sequence so far is sent, the server computes what it lacks."""
        try:
            self._note(self.server.prefill([*self._ids, *ids], self.slot))
        except ServerError as exc:
            raise EngineError(str(exc)) from exc

    def _drop_from(self, n: int) -> None:
        pass  # the next request's shared prefix is what the server keeps

    def _last_logits(self) -> npt.NDArray[np.float32]:
        raise EngineError("a remote engine has no local logits: the server samples")

    def generate(
        self,
        max_tokens: int,
        stop_ids: set[int],
        sampling: Sampling | None = None,
        should_stop: ShouldStop = never,
    ) -> Generator[int, None, None]:
        """One streamed request for everything: the server prefills what it lacks of the sequence, then writes.
        Closing the stream (the answer is decided, or the user typed on) makes the server stop."""
        sampling = sampling or Sampling()
        stream = self.server.generate(list(self._ids), max_tokens, self.slot, should_stop, sampling.temperature)
        text, have = bytearray(), bytearray()  # the bytes the server sent as text; those of the ids it sent
        try:
            for piece in stream:
                ids = piece.ids
                if piece.text is not None:  # recover ids the server withheld (they ended inside a character)
                    text += piece.text.encode("utf-8")
                    missing = bytes(text[len(have) : len(text) - len(self.detokenize(ids))])
                    ids = [*self._byte_ids(missing), *ids]
                for token in ids:
                    if token in stop_ids or token in self._eos:
                        return
                    have += self.detokenize([token])
                    yield token
                    self._ids.append(token)
                if should_stop():
                    return
        except ServerError as exc:
            raise EngineError(str(exc)) from exc
        finally:
            stream.close()  # early exit: the connection closes and the server aborts the request
            self._note(self.server.last)

    def _byte_ids(self, data: bytes) -> list[int]:
        """The byte-level tokens of `data` (every byte-level BPE vocabulary has one per byte)."""
        if not data:
            return []
        if self._bytes is None:
            self._bytes = {}
            for i in range(self._vocab.n_vocab()):
                piece = self.detokenize([i])
                if len(piece) == 1 and piece[0] not in self._bytes:
                    self._bytes[piece[0]] = i
        return [self._bytes[b] for b in data if b in self._bytes]

    def set_sequence(self, ids: Sequence[int]) -> None:
        """The sequence the next generation runs after, with no request of its own: the generation's request
        prefills it (one round trip for a completion, not two)."""
        self._ids = list(ids)
        self._logits_known = False

    # -- snapshots on the server's disk -----------------------------------------------------

    def _slot_file(self, path: Path) -> str:
        return f"banked-{_digest(user_key(), str(path.parent))}.bin"

    def save(self, path: Path) -> None:
        if self.slot is None:
            raise EngineError("no server slot holds this workspace yet: nothing to save")
        try:
            now = self.server.slot_state(self.slot) if self._mine is not None else None
        except ServerError as exc:
            raise EngineError(str(exc)) from exc
        if now is not None and now != self._mine:
            raise EngineError(f"server slot {self.slot} holds another user's work now: not saving it as this one's")
        name = self._slot_file(path)
        try:
            n = self.server.save_slot(self.slot, name)
        except ServerError as exc:
            raise EngineError(f"the server could not save the slot ({exc}); start it with --slot-save-path") from exc
        self._saved = (name, n, list(self._ids))
        path.write_text(json.dumps({"file": name, "slot": self.slot, "n": n, "ids": list(self._ids)}))

    def load(self, path: Path) -> list[int]:
        """Restore the slot from the server's disk; returns the prefix it holds (the saved slot may hold a
        request's tail after it, which the next request's shared prefix keeps or drops)."""
        try:
            note = json.loads(path.read_text())
            ids = [int(t) for t in note["ids"]]
            slot = int(note["slot"]) if self.slot is None else self.slot
            n = self.server.restore_slot(slot, str(note["file"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"bad remote snapshot note {path}: {exc}") from exc
        except ServerError as exc:
            raise EngineError(f"the server could not restore the slot: {exc}") from exc
        if n != int(note.get("n", -1)) or n < len(ids):
            raise EngineError(f"the server restored {n} tokens, not the {note.get('n')} saved: another save came since")
        self.slot = slot
        self._saved = (str(note["file"]), n, ids)
        self._ids = ids
        self._logits_known = False
        self._mine = self.server.slot_state(slot)
        return list(ids)

    def close(self) -> None:
        self.server.close()
        self._vocab.close()


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def make_remote(
    url: str,
    kind: str,
    vocab: Path,
    api_key: str | None,
    model: str = "",
    insecure: bool = False,
    slot: int = -1,
    n_ctx: int = 0,
    chunk: int = 2048,
) -> RemoteEngine:
    try:
        server = connect(url, kind, api_key, model, user_key(), insecure)
    except ServerError as exc:
        raise EngineError(str(exc)) from exc
    return RemoteEngine(server, vocab, chunk=chunk, slot=slot, n_ctx=n_ctx)


def describe(info: ServerInfo) -> str:
    return f"{info.kind} serving {info.model} ({info.n_ctx:,} tokens of context, {info.slots} slots)"
