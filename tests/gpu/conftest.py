"""GPU tests: skipped cleanly where CUDA or exllamav2 is missing (CI); run them on a GPU machine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _gpu_ready(package: str) -> str:
    if importlib.util.find_spec("torch") is None:
        return "no torch"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if importlib.util.find_spec(package) is None:
        return f"{package} is not installed"
    return ""


# Each file's own requirement beside the GPU: the exl2 engine's, or the server the remote engine talks to.
NEEDS = {"test_exl2.py": ("exllamav2",), "test_remote_servers.py": ("transformers",)}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if "gpu" not in path.parts:
            continue
        for package in NEEDS.get(path.name, ("torch",)):
            why = _gpu_ready(package)
            if why:
                item.add_marker(pytest.mark.skip(reason=f"GPU test: {why}"))
                break


@pytest.fixture(scope="session")
def exl2_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from banked.daemon.cli.convert import convert
    from banked.daemon.engines.tinyhf import write_tiny_qwen2_hf

    base = tmp_path_factory.mktemp("exl2")
    hf = write_tiny_qwen2_hf(base / "hf")
    return convert(hf, base / "tiny-exl2", bits=4.0, head_bits=6, rows=4, length=256, report=lambda _l: None)
