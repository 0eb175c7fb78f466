"""Shared by the engine benchmarks: progress logging. (`gpusleuth` must be importable: installed, or on an
uninstalled checkout through benchmarks/checkout_env.sh, which gpu_session.sh sources.)"""
from __future__ import annotations

import time


def log(msg: str) -> None:
    """Print `msg` with the time of day, at once (benchmarks run under timeouts that would eat buffered output)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
