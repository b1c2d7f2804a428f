"""GPU tests: skipped cleanly where CUDA or exllamav2 is missing (CI); run them on a GPU machine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _gpu_ready() -> str:
    if importlib.util.find_spec("torch") is None:
        return "no torch"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if importlib.util.find_spec("exllamav2") is None:
        return "exllamav2 is not installed"
    return ""


_why = _gpu_ready()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _why:
        for item in items:
            if "tests/gpu" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=f"GPU test: {_why}"))


@pytest.fixture(scope="session")
def exl2_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from banked.daemon.cli.convert import convert
    from banked.daemon.engines.tinyhf import write_tiny_qwen2_hf

    base = tmp_path_factory.mktemp("exl2")
    hf = write_tiny_qwen2_hf(base / "hf")
    return convert(hf, base / "tiny-exl2", bits=4.0, head_bits=6, rows=4, length=256, report=lambda _l: None)
