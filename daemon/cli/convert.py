"""`banked model convert`: make an EXL2 model from what the user has (an HF directory or a GGUF file).

A GGUF file is first dequantized to an HF safetensors directory through
transformers' GGUF loader; exllamav2's own converter then measures and
quantizes it. Both need a CUDA GPU, torch and exllamav2 (and `gguf` for GGUF input).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

Report = Callable[[str], None]


class ConvertError(RuntimeError):
    pass


def dequantize_gguf(src: Path, out: Path, report: Report) -> Path:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ConvertError("converting a GGUF file needs torch and transformers (and gguf)") from exc
    report(f"dequantizing {src.name} through transformers' GGUF loader")
    kw = {"gguf_file": src.name}
    tok = AutoTokenizer.from_pretrained(src.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(src.parent, torch_dtype=torch.float16, **kw)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def convert(
    src: Path,
    out: Path,
    bits: float = 4.0,
    head_bits: int = 6,
    rows: int = 0,
    length: int = 0,
    report: Report = print,
) -> Path:
    """Convert `src` into the EXL2 model directory `out`; the work dir is removed on success."""
    if out.exists() and any(out.iterdir()):
        raise ConvertError(f"{out} exists and is not empty; choose another OUT or remove it")
    work = out.with_name(out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if src.is_file() and src.suffix == ".gguf":
        hf = dequantize_gguf(src, work / "hf", report)
    elif (src / "config.json").is_file():
        hf = src
    else:
        raise ConvertError(f"{src} is neither an HF model directory (config.json) nor a .gguf file")
    cmd = [
        sys.executable,
        "-m",
        "exllamav2.conversion.convert_exl2",
        "-i",
        str(hf),
        "-o",
        str(work / "job"),
        "-cf",
        str(out),
        "-b",
        str(bits),
        "-hb",
        str(head_bits),
        "-nr",
    ]
    if rows:
        cmd += ["-r", str(rows), "-mr", str(max(1, rows // 4))]
    if length:
        cmd += ["-l", str(length), "-ml", str(length)]
    (work / "job").mkdir()
    report("running exllamav2's converter: " + " ".join(cmd[3:]))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            report(line)
            tail = ([*tail, line])[-20:]
    if proc.wait() != 0:
        raise ConvertError(f"the converter failed (exit {proc.returncode}); its last lines:\n" + "\n".join(tail))
    shutil.rmtree(work, ignore_errors=True)
    return out
