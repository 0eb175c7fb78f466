"""Suite-wide settings. Area helpers live in tests/<area>_helpers.py."""
from __future__ import annotations

import os

import pytest

# Triton kernels run on the CPU through the interpreter where there is no GPU; it must be chosen before triton is
# first imported, so it is set here, before any test module loads.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config, items):
    skip_root = pytest.mark.skip(reason="needs root (eBPF, network namespaces, tc): run the suite with sudo")
    for item in items:
        if "root" in item.keywords and not IS_ROOT:
            item.add_marker(skip_root)
