"""Which engine the configuration gets, and a clear error where the exl2 engine cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from banked.daemon.config import Config
from banked.daemon.engines import EngineError, choose, make_engine, model_store
from banked.daemon.engines.exl2 import cuda_available, is_exl2_dir


def fake_exl2_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "exl2", "bits": 4.0}}))
    (path / "output.safetensors").write_bytes(b"\0" * 8)
    return path


def test_exl2_model_directories_are_recognised(tmp_path: Path) -> None:
    assert is_exl2_dir(fake_exl2_dir(tmp_path / "m"))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert not is_exl2_dir(tmp_path / "hf")


def test_auto_falls_back_to_llamacpp_without_cuda(banked_env: dict[str, str], tmp_path: Path) -> None:
    if cuda_available():
        pytest.skip("this machine has CUDA")
    exl2 = fake_exl2_dir(tmp_path / "m")
    assert choose(Config(engine="auto", model=str(exl2)))[0] == "llamacpp"
    assert choose(Config(engine="auto"))[0] == "llamacpp"
    assert choose(Config(engine="llamacpp", model="/x.gguf")) == ("llamacpp", Path("/x.gguf"))
    assert choose(Config(engine="auto", model="qwen2.5-coder-0.5b")) == ("llamacpp", model_store.SMALL)
    assert choose(Config(engine="llamacpp")) == ("llamacpp", model_store.DEFAULT)


def test_choosing_exl2_without_a_gpu_is_a_clear_error(banked_env: dict[str, str], tmp_path: Path) -> None:
    if cuda_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(EngineError, match='use engine = "llamacpp"'):
        make_engine(Config(engine="exl2", model=str(fake_exl2_dir(tmp_path / "m"))))
    with pytest.raises(EngineError, match="no EXL2 model"):
        choose(Config(engine="exl2"))
    with pytest.raises(EngineError, match="unknown engine"):
        choose(Config(engine="vllm"))


def test_the_daemon_refuses_exl2_here_with_the_reason(banked_env: dict[str, str], tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    if cuda_available():
        pytest.skip("this machine has CUDA")
    env = {**os.environ, **banked_env, "BANKED_ENGINE": "exl2", "BANKED_MODEL": str(fake_exl2_dir(tmp_path / "m"))}
    out = subprocess.run(
        [sys.executable, "-m", "banked.daemon", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert "exl2 engine needs" in out.stderr and "llamacpp" in out.stderr
