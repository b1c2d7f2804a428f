"""The wire to an inference server: llama.cpp's `llama-server`, vLLM and SGLang, each spoken in its own API.

Every request carries the prompt as token ids, never text: the daemon plans the token sequence exactly as it
does for a local engine (workspace prefix, focus segment, FIM tail), and a server with a prefix cache then
re-prefills only what changed since the last request, as the local engine would. What each server needs:

- llama.cpp: `POST /completion` with `prompt` as ids, `cache_prompt`, a sticky `id_slot`, `n_predict`
  (0: prefill only), streamed; what it reused is `tokens_cached`, what it prefilled `timings.prompt_n`;
  `/slots/{id}?action=save|restore` keeps a slot's cache on the server's disk (`--slot-save-path`).
- vLLM: `POST /v1/completions` with a token-id prompt (automatic prefix caching), `usage.prompt_tokens_
  details.cached_tokens` (`--enable-prompt-tokens-details`); `return_token_ids` for the generated ids.
- SGLang: `POST /generate` with `input_ids` (RadixAttention), `meta_info.cached_tokens`, `output_ids`.

Routers that route by session or cache (vLLM's production stack, SGLang's router) get a stable per-user key
in `X-Session-Id` / `X-User-Id` and the `user` field, so a user stays on the replica holding their workspace.

Nothing here runs on the daemon's event loop: the model thread calls it, as it calls a local engine.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import ssl
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

ShouldStop = Callable[[], bool]
KINDS = ("llama.cpp", "vllm", "sglang")
#: Seconds between the server's keep-alive comments while it prefills (llama.cpp): how soon a cancel is seen.
PING_S = 0.25


class ServerError(RuntimeError):
    """The server failed or cannot be used; the message says what happened and what to do."""


class ServerUnreachable(ServerError):
    """No answer at all (down, restarting, wrong address): the fallback engine may answer meanwhile."""


class ServerAuthError(ServerError):
    """The server refused the API key (or wants one)."""


@dataclass
class ServerInfo:
    kind: str
    model: str
    n_ctx: int  # the context of one slot / one request
    slots: int = 1
    build: str = ""


@dataclass(frozen=True)
class Piece:
    """What one streamed event adds: token ids, and (llama.cpp) the text they make. llama.cpp never sends the
    id of a token that ends inside a UTF-8 character: its bytes arrive with the next token's text, and the
    engine recovers the id from them (remote.py)."""

    ids: list[int]
    text: str | None = None


@dataclass
class Usage:
    """What one request cost the server: prompt tokens it took from its cache and those it computed."""

    prompt: int = 0
    cached: int = 0
    prefilled: int = 0
    generated: int = 0
    slot: int | None = None
    ms: float = 0.0


@dataclass
class Http:
    """One keep-alive HTTP(S) connection to the server, with the headers every request carries."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 600.0
    insecure: bool = False  # plain http to a host that is not loopback (the user said so)
    _conn: http.client.HTTPConnection | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerError(f"remote_url {self.url!r} is not an http(s) URL such as https://gpu-box:8080")
        if parts.scheme == "http" and not is_loopback(parts.hostname) and not self.insecure:
            raise ServerError(
                f"remote_url {self.url} is plain http to another machine: your code would cross the network "
                "unencrypted. Use https (a TLS proxy in front of the server), or set remote_insecure = true "
                "if the network is yours"
            )
        self.base = parts.path.rstrip("/")

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            parts = urlsplit(self.url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            if parts.scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    parts.hostname or "", port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                self._conn = http.client.HTTPConnection(parts.hostname or "", port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _send(self, method: str, path: str, body: Any | None) -> http.client.HTTPResponse:
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {**self.headers, "Content-Type": "application/json"} if data is not None else dict(self.headers)
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile: once more on a new one
            conn = self._connect()
            try:
                conn.request(method, self.base + path, body=data, headers=headers)
                return conn.getresponse()
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self.close()
                if attempt == 2 or not isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError)):
                    raise ServerUnreachable(f"{self.url} did not answer ({exc}); is the server running?") from exc
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Any | None = None) -> Any:
        resp = self._send(method, path, body)
        raw = resp.read()
        _check(resp.status, raw, self.url + path)
        try:
            return json.loads(raw) if raw else None
        except ValueError as exc:
            raise ServerError(f"{self.url}{path} sent something that is not JSON") from exc

    def stream(
        self, path: str, body: Any, should_stop: ShouldStop, last: Callable[[dict[str, Any]], bool] = lambda _e: False
    ) -> Iterator[dict[str, Any]]:
        """Server-sent events of a streamed request, as dicts; stops early (closing the connection, which
        makes the server abort the request) when `should_stop` says so between events. The stream must end
        with `[DONE]` or an event `last` recognises: a connection closed before that is a server that died."""
        resp = self._send("POST", path, body)
        if resp.status >= 400:
            _check(resp.status, resp.read(), self.url + path)
        done = ended = False
        try:
            while True:
                if should_stop():
                    return
                try:
                    line = resp.readline()
                except OSError as exc:
                    raise ServerUnreachable(f"{self.url} stopped answering mid-stream ({exc})") from exc
                if not line:
                    if ended:
                        done = True
                        return
                    raise ServerUnreachable(f"{self.url} closed the stream before the answer ended (it stopped?)")
                text = line.decode("utf-8", "replace").strip()
                if not text.startswith("data:"):
                    continue  # blank separators and ": ping" comments
                payload = text[5:].strip()
                if payload == "[DONE]":
                    done = True
                    return
                try:
                    event = json.loads(payload)
                except ValueError:
                    continue
                if isinstance(event, dict) and "error" in event and not event.get("choices"):
                    raise ServerError(f"{self.url}{path}: {_message(json.dumps(event).encode())}")
                ended = ended or last(event)
                yield event
        finally:
            if not done:
                self.close()  # the server sees the connection close and stops generating
            else:
                resp.read()


def _check(status: int, raw: bytes, where: str) -> None:
    if status in (401, 403):
        raise ServerAuthError(
            f"{where} refused banked's API key ({status}: {_message(raw)}): set remote_api_key_env to the variable "
            "holding the team's key, or remote_api_key_file to a file (mode 0600) holding it"
        )
    if status >= 400:
        raise ServerError(f"{where} answered {status}: {_message(raw)}")


def _message(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        return raw[:200].decode("utf-8", "replace")
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)[:200]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server:
    """One kind of server. Generation is greedy unless a temperature is given; every call is blocking."""

    kind = ""

    def __init__(self, http_: Http, model: str = "", user: str = ""):
        self.http = http_
        self.model = model
        self.user = user
        self.last = Usage()

    def info(self) -> ServerInfo:
        raise NotImplementedError

    def reachable(self) -> bool:
        """A quick look on a connection of its own (callable from any thread, unlike the others)."""
        probe = Http(self.http.url, dict(self.http.headers), 5.0, self.http.insecure)
        try:
            probe.json("GET", {"llama.cpp": "/health", "vllm": "/health", "sglang": "/health"}.get(self.kind, "/"))
            return True
        except ServerError:
            return False
        finally:
            probe.close()

    def tokenize(self, text: str) -> list[int]:
        raise NotImplementedError

    def prefill(self, ids: Sequence[int], slot: int | None) -> Usage:
        """Make the server's cache hold `ids` (it reuses what it has); no tokens generated."""
        raise NotImplementedError

    def generate(
        self, ids: Sequence[int], max_tokens: int, slot: int | None, should_stop: ShouldStop, temperature: float = 0.0
    ) -> Generator[Piece, None, None]:
        """Stream what the model writes after `ids`; `self.last` holds the usage as far as it is known."""
        raise NotImplementedError

    def slot_state(self, slot: int) -> tuple[int, ...] | None:
        return None  # vLLM and SGLang share one prefix cache among requests: there is no slot to lose

    def save_slot(self, slot: int, filename: str) -> int:
        raise ServerError(f"{self.kind} keeps no slot on disk: a restarted or full server re-prefills")

    def restore_slot(self, slot: int, filename: str) -> int:
        raise ServerError(f"{self.kind} keeps no slot on disk")

    def close(self) -> None:
        self.http.close()


class LlamaCppServer(Server):
    kind = "llama.cpp"

    def info(self) -> ServerInfo:
        props = self.http.json("GET", "/props")
        settings = props.get("default_generation_settings", {}) if isinstance(props, dict) else {}
        n_ctx = int(settings.get("n_ctx") or 0)
        slots = int(props.get("total_slots") or 1)
        model = str(props.get("model_alias") or props.get("model_path") or "llama-server")
        return ServerInfo(self.kind, model, n_ctx, slots, str(props.get("build_info", "")))

    def tokenize(self, text: str) -> list[int]:
        out = self.http.json("POST", "/tokenize", {"content": text, "add_special": False, "parse_special": False})
        return [int(t) for t in out.get("tokens", [])]

    def _body(self, ids: Sequence[int], n: int, slot: int | None, temperature: float) -> dict[str, Any]:
        return {
            "prompt": list(ids),
            "n_predict": n,
            "cache_prompt": True,
            "id_slot": -1 if slot is None else slot,
            "temperature": temperature,
            "top_k": 1 if temperature <= 0 else 40,
            "repeat_penalty": 1.0,
            "return_tokens": True,
            "timings_per_token": True,  # the counts arrive with every piece: a stream closed early has them too
            # not the prompt echoed back (the whole workspace, at every keystroke)
            "response_fields": ["content", "tokens", "id_slot", "stop", "tokens_cached", "tokens_evaluated", "timings"],
        }

    def _usage(self, final: dict[str, Any], t0: float) -> Usage:
        timings = final.get("timings") or {}
        prompt = int(final.get("tokens_evaluated") or 0)
        cached = int(timings.get("cache_n", final.get("tokens_cached", 0)) or 0)
        prefilled = int(timings.get("prompt_n", max(0, prompt - cached)) or 0)
        return Usage(
            prompt=prompt,
            cached=cached,
            prefilled=prefilled,
            generated=int(timings.get("predicted_n", 0) or 0),
            slot=final.get("id_slot"),
            ms=1000 * (time.perf_counter() - t0),
        )

    def prefill(self, ids: Sequence[int], slot: int | None) -> Usage:
        t0 = time.perf_counter()
        final = self.http.json("POST", "/completion", self._body(ids, 0, slot, 0.0))
        self.last = self._usage(final if isinstance(final, dict) else {}, t0)
        return self.last

    def generate(
        self, ids: Sequence[int], max_tokens: int, slot: int | None, should_stop: ShouldStop, temperature: float = 0.0
    ) -> Generator[Piece, None, None]:
        t0 = time.perf_counter()
        body = {**self._body(ids, max_tokens, slot, temperature), "stream": True, "sse_ping_interval": PING_S}
        self.last = Usage(slot=slot)
        for event in self.http.stream("/completion", body, should_stop, last=lambda e: bool(e.get("stop"))):
            if event.get("timings"):
                self.last = self._usage({"tokens_evaluated": len(ids), **event}, t0)
            if event.get("tokens") or event.get("content"):
                yield Piece([int(t) for t in event.get("tokens") or []], str(event.get("content") or ""))

    def slot_state(self, slot: int) -> tuple[int, ...] | None:
        """What the slot last did, as counts (tokens it holds, computed, reused, wrote): if they changed since
        this daemon's last request, someone else's request ran there (or the server restarted). None: the
        server does not say (`--no-slots`)."""
        try:
            slots = self.http.json("GET", "/slots")
        except (ServerAuthError, ServerUnreachable):
            raise
        except ServerError:
            return None  # started with --no-slots
        for s in slots if isinstance(slots, list) else []:
            if s.get("id") == slot:
                nxt = (s.get("next_token") or [{}])[0]
                keys = ("n_prompt_tokens", "n_prompt_tokens_processed", "n_prompt_tokens_cache")
                return (*(int(s.get(k, -1)) for k in keys), int(nxt.get("n_decoded", -1)))
        return None

    def save_slot(self, slot: int, filename: str) -> int:
        out = self.http.json("POST", f"/slots/{slot}?action=save", {"filename": filename})
        return int(out.get("n_saved", 0))

    def restore_slot(self, slot: int, filename: str) -> int:
        out = self.http.json("POST", f"/slots/{slot}?action=restore", {"filename": filename})
        return int(out.get("n_restored", 0))


class VllmServer(Server):
    kind = "vllm"

    def info(self) -> ServerInfo:
        models = self.http.json("GET", "/v1/models").get("data", [])
        if not models:
            raise ServerError(f"{self.http.url} serves no model")
        chosen = next((m for m in models if m.get("id") == self.model), models[0])
        self.model = str(chosen.get("id"))
        return ServerInfo(self.kind, self.model, int(chosen.get("max_model_len") or 0))

    def tokenize(self, text: str) -> list[int]:
        out = self.http.json("POST", "/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False})
        return [int(t) for t in out.get("tokens", [])]

    def _body(self, ids: Sequence[int], n: int, temperature: float) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": list(ids),
            "max_tokens": n,
            "temperature": temperature,
            "user": self.user,
            "return_token_ids": True,
            "skip_special_tokens": False,
        }

    def _usage(self, usage: dict[str, Any] | None, t0: float) -> Usage:
        u = usage or {}
        prompt = int(u.get("prompt_tokens") or 0)
        cached = int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        return Usage(prompt, cached, max(0, prompt - cached), int(u.get("completion_tokens") or 0), None,
                     1000 * (time.perf_counter() - t0))  # fmt: skip

    def prefill(self, ids: Sequence[int], slot: int | None) -> Usage:
        t0 = time.perf_counter()  # vLLM has no prefill-only request: one token, thrown away
        out = self.http.json("POST", "/v1/completions", self._body(ids, 1, 0.0))
        self.last = self._usage(out.get("usage"), t0)
        return self.last

    def generate(
        self, ids: Sequence[int], max_tokens: int, slot: int | None, should_stop: ShouldStop, temperature: float = 0.0
    ) -> Generator[Piece, None, None]:
        t0 = time.perf_counter()
        body = {**self._body(ids, max_tokens, temperature), "stream": True, "stream_options": {"include_usage": True}}
        self.last = Usage()
        for event in self.http.stream("/v1/completions", body, should_stop):
            for choice in event.get("choices") or []:
                if choice.get("token_ids"):
                    yield Piece([int(t) for t in choice["token_ids"]])
            if event.get("usage"):
                self.last = self._usage(event["usage"], t0)


class SglangServer(Server):
    kind = "sglang"

    def info(self) -> ServerInfo:
        out = self.http.json("GET", "/get_model_info")
        model = str(out.get("model_path") or self.model or "sglang")
        n_ctx = 0
        with contextlib.suppress(ServerError):
            n_ctx = int((self.http.json("GET", "/get_server_info") or {}).get("context_length") or 0)
        return ServerInfo(self.kind, model, n_ctx)

    def tokenize(self, text: str) -> list[int]:
        out = self.http.json("POST", "/tokenize", {"prompt": text, "add_special_tokens": False})
        return [int(t) for t in out.get("tokens", [])]

    def _body(self, ids: Sequence[int], n: int, temperature: float) -> dict[str, Any]:
        return {
            "input_ids": list(ids),
            "sampling_params": {"max_new_tokens": n, "temperature": temperature, "skip_special_tokens": False},
            "rid": None,
        }

    def _usage(self, meta: dict[str, Any] | None, t0: float) -> Usage:
        m = meta or {}
        prompt = int(m.get("prompt_tokens") or 0)
        cached = int(m.get("cached_tokens") or 0)
        return Usage(prompt, cached, max(0, prompt - cached), int(m.get("completion_tokens") or 0), None,
                     1000 * (time.perf_counter() - t0))  # fmt: skip

    def prefill(self, ids: Sequence[int], slot: int | None) -> Usage:
        t0 = time.perf_counter()
        out = self.http.json("POST", "/generate", self._body(ids, 0, 0.0))
        self.last = self._usage((out or {}).get("meta_info"), t0)
        return self.last

    def generate(
        self, ids: Sequence[int], max_tokens: int, slot: int | None, should_stop: ShouldStop, temperature: float = 0.0
    ) -> Generator[Piece, None, None]:
        t0 = time.perf_counter()
        body = {**self._body(ids, max_tokens, temperature), "stream": True}
        self.last = Usage()
        seen = 0
        for event in self.http.stream("/generate", body, should_stop):
            out = event.get("output_ids") or []
            if len(out) > seen:  # SGLang streams the ids so far, not the new ones
                yield Piece([int(t) for t in out[seen:]])
            seen = max(seen, len(out))
            self.last = self._usage(event.get("meta_info"), t0)


def connect(
    url: str,
    kind: str = "auto",
    api_key: str | None = None,
    model: str = "",
    user: str = "",
    insecure: bool = False,
    timeout: float = 600.0,
) -> Server:
    """A client for the server at `url`, its kind named or found out (`auto`: the endpoints it answers)."""
    headers = {"User-Agent": "banked"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if user:
        headers["X-Session-Id"] = user  # routers that keep a session on one replica
        headers["X-User-Id"] = user
    http_ = Http(url, headers, timeout, insecure)
    table: dict[str, type[Server]] = {"llama.cpp": LlamaCppServer, "vllm": VllmServer, "sglang": SglangServer}
    if kind != "auto":
        if kind not in table:
            raise ServerError(f"remote_kind {kind!r}: choose auto, {', '.join(KINDS)}")
        return table[kind](http_, model, user)
    for name, probe in (("llama.cpp", "/props"), ("sglang", "/get_model_info"), ("vllm", "/v1/models")):
        try:
            http_.json("GET", probe)
        except (ServerUnreachable, ServerAuthError):
            raise
        except ServerError:
            continue
        return table[name](http_, model, user)
    raise ServerError(f"{url} is none of llama.cpp's server, vLLM or SGLang; set remote_kind")
