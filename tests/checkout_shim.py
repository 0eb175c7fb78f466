"""Make `gpusleuth.<folder>` importable from a checkout that is not pip-installed (GPU hosts have no network).

The same mapping pyproject's package-dir gives an install, made of symlinks in a temporary folder; children inherit
it through PYTHONPATH. Used by the GPU tests, the engine/kernel test helpers and the benchmarks.
"""
from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("agent", "probes", "exporters", "engine", "kernels", "tui", "runbooks")


def ensure_gpusleuth_importable(check: str = "gpusleuth.agent") -> None:
    """Unless `check` already imports, link every folder into the shim and put it first on sys.path."""
    try:
        importlib.import_module(check)
        return
    except ImportError:
        pass
    pkg = Path(tempfile.gettempdir()) / f"gpusleuth-shim-{os.getuid()}" / "gpusleuth"
    pkg.mkdir(parents=True, exist_ok=True)
    for name in FOLDERS:
        link, target = pkg / name, REPO / name
        if link.is_symlink() and link.resolve() != target.resolve():
            link.unlink()  # left by another checkout
        if not link.exists():
            link.symlink_to(target)
    root = str(pkg.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, *paths]))
    importlib.invalidate_caches()
