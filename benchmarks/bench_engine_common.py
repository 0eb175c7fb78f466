"""Shared by the engine benchmarks: make `gpusleuth` importable from a checkout that is not pip-installed (the GPU
hosts have no network), and progress logging."""
from __future__ import annotations

import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("agent", "probes", "exporters", "engine", "kernels")


def ensure_gpusleuth_importable() -> None:
    """Map gpusleuth.<folder> to the checkout's folders by symlinks (what pyproject's package-dir does for an
    install) unless the engine already imports; spawned ranks and the server subprocess get it via PYTHONPATH."""
    try:
        import gpusleuth.engine.config  # noqa: F401
        import gpusleuth.kernels  # noqa: F401 (the engine needs both folders)
        return
    except ImportError:
        pass
    pkg = Path(tempfile.gettempdir()) / f"gpusleuth-shim-{os.getuid()}" / "gpusleuth"
    pkg.mkdir(parents=True, exist_ok=True)
    for name in FOLDERS:
        if not (pkg / name).exists():
            (pkg / name).symlink_to(REPO / name)
    if str(pkg.parent) not in sys.path:
        sys.path.insert(0, str(pkg.parent))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pkg.parent), os.environ.get("PYTHONPATH")]))
    importlib.invalidate_caches()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
