"""A small sample workspace bundled for `banked demo`."""

from pathlib import Path

WORKSPACE = Path(__file__).parent / "workspace"
