"""Inference engines behind one small protocol (see base.py); chosen by configuration."""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..model_store import Progress, ensure_default_model
from .base import Engine, EngineError, EngineInfo, Sampling, TextStream

__all__ = ["Engine", "EngineError", "EngineInfo", "Sampling", "TextStream", "make_engine"]


def make_engine(cfg: Config, progress: Progress | None = None) -> Engine:
    """The engine the configuration asks for; with none, llama.cpp on the embedded default.

    exl2 (the GPU engine) is not built yet: asking for it is a clear error.
    """
    name = cfg.engine
    if name == "exl2":
        raise EngineError('the exl2 engine is not available in this build; use engine = "llamacpp"')
    if name not in ("auto", "llamacpp"):
        raise EngineError(f'unknown engine {name!r}; choose "auto" or "llamacpp"')
    from .llamacpp import LlamaCppEngine

    model = Path(cfg.model).expanduser() if cfg.model else ensure_default_model(progress)
    return LlamaCppEngine(model, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, chunk=cfg.prefill_chunk)
