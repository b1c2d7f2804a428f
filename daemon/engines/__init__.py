"""Inference engines behind one small protocol (see base.py); chosen by configuration."""

from __future__ import annotations

from pathlib import Path

from banked.daemon import paths
from banked.daemon.config import Config
from banked.daemon.engines import model_store
from banked.daemon.engines.base import Engine, EngineError, EngineInfo, Sampling
from banked.daemon.engines.model_store import Packaged, Progress

__all__ = ["Engine", "EngineError", "EngineInfo", "Sampling", "choose", "make_engine"]

DEFAULT_CHUNK = {"llamacpp": 64, "exl2": 2048, "remote": 2048}


def find_exl2_model() -> Path | None:
    """The first EXL2 model under the models dir (where `banked model convert` puts them)."""
    from banked.daemon.engines.exl2 import is_exl2_dir

    root = paths.models_dir()
    if not root.is_dir():
        return None
    return next((d for d in sorted(root.iterdir()) if d.is_dir() and is_exl2_dir(d)), None)


def choose(cfg: Config) -> tuple[str, Path | Packaged]:
    """(engine name, model: a path, or a packaged model such as the embedded default), loading nothing.

    "auto" picks exl2 when CUDA and an EXL2 model are present, else llamacpp.
    """
    from banked.daemon.engines.exl2 import cuda_available, is_exl2_dir

    named = model_store.packaged(cfg.model)
    model = None if named else Path(cfg.model).expanduser()
    if cfg.engine == "auto":
        exl2 = model if model is not None and model.is_dir() else (None if cfg.model else find_exl2_model())
        if exl2 is not None and is_exl2_dir(exl2) and cuda_available():
            return "exl2", exl2
        return "llamacpp", model or named or model_store.DEFAULT
    if cfg.engine == "exl2":
        exl2 = model or (None if named and cfg.model else find_exl2_model())
        if exl2 is None:
            raise EngineError(
                f'engine = "exl2" but no EXL2 model: set `model` or convert one into {paths.models_dir()}'
            )
        return "exl2", exl2
    if cfg.engine == "llamacpp":
        return "llamacpp", model or named or model_store.DEFAULT
    if cfg.engine == "remote":
        if not cfg.remote_url:
            raise EngineError('engine = "remote" needs remote_url (the team server, e.g. "https://gpu-box:8080")')
        # the model is the server's; locally only its vocabulary is read (remote_tokenizer, else the embedded GGUF)
        tok = model_store.packaged(cfg.remote_tokenizer)
        if cfg.remote_tokenizer and not tok:
            return "remote", Path(cfg.remote_tokenizer).expanduser()
        return "remote", tok or model_store.DEFAULT
    raise EngineError(f'unknown engine {cfg.engine!r}; choose "auto", "llamacpp", "exl2" or "remote"')


def make_engine(cfg: Config, progress: Progress | None = None) -> Engine:
    """The engine the configuration asks for (`prefill_chunk` 0 means the engine's own default)."""
    name, model = choose(cfg)
    chunk = cfg.prefill_chunk or DEFAULT_CHUNK[name]
    if name == "remote":
        return _remote(cfg, model, chunk, progress)
    if name == "exl2":
        from banked.daemon.engines.exl2 import Exl2Engine

        assert isinstance(model, Path)
        return Exl2Engine(
            model,
            n_ctx=cfg.n_ctx,
            cache_type=cfg.cache_type,
            chunk=chunk,
            rope_scale=cfg.rope_scale,
            rope_alpha=cfg.rope_alpha,
        )
    from banked.daemon.engines.llamacpp import LlamaCppEngine

    path = model if isinstance(model, Path) else model_store.ensure(model, progress)
    # request_chunk 0 is the chunk: Engine takes max(chunk, burst)
    return LlamaCppEngine(path, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, chunk=chunk, burst=cfg.request_chunk)


def _remote(cfg: Config, vocab: Path | Packaged, chunk: int, progress: Progress | None) -> Engine:
    """The remote engine (with the local one behind it when `remote_fallback = "local"`)."""
    from banked.daemon.engines.remote import make_remote, read_api_key

    gguf = vocab if isinstance(vocab, Path) else model_store.ensure(vocab, progress)
    key = read_api_key(cfg.remote_api_key_env, cfg.remote_api_key_file)

    def remote() -> Engine:
        return make_remote(
            cfg.remote_url,
            cfg.remote_kind,
            gguf,
            key,
            model=cfg.remote_model,
            insecure=cfg.remote_insecure,
            slot=cfg.remote_slot,
            n_ctx=cfg.n_ctx,
            chunk=chunk,
        )

    if cfg.remote_fallback != "local":
        return remote()
    from banked.daemon.engines.failover import Failover
    from banked.daemon.engines.llamacpp import LlamaCppEngine

    def local() -> Engine:
        return LlamaCppEngine(gguf, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, chunk=DEFAULT_CHUNK["llamacpp"])

    return Failover(remote, local)  # type: ignore[arg-type]
