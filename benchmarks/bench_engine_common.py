"""Shared by the engine benchmarks: make `gpusleuth` importable from a checkout that is not pip-installed (the GPU
hosts have no network), and progress logging."""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for tests.checkout_shim
from tests.checkout_shim import ensure_gpusleuth_importable as _ensure  # noqa: E402



def ensure_gpusleuth_importable() -> None:
    """gpusleuth.engine and .kernels importable from this checkout (see tests/checkout_shim.py)."""
    _ensure("gpusleuth.engine.config")
    _ensure("gpusleuth.kernels")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
