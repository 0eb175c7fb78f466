"""Shared by the benchmarks: progress logging and writing the result file. (`gpusleuth` must be importable:
installed, or on an uninstalled checkout through benchmarks/checkout_env.sh, which gpu_session.sh sources.)"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def log(msg: str) -> None:
    """Print `msg` with the time of day, at once (benchmarks run under timeouts that would eat buffered output)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_result(path: str | Path, result: dict[str, Any], indent: int = 2) -> Path:
    """Write the benchmark's JSON result to `path` (folders made as needed); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=indent) + "\n")
    return out
