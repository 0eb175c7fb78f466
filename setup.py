"""Packaging: the repository root *is* the `gpusleuth` package, so `probes/gpu/nvml.py` is `gpusleuth.probes.gpu.nvml`.

Everything else is in pyproject.toml. Only the package list needs code: setuptools' automatic discovery names
packages after their folders (`agent`), and the namespace prefix `gpusleuth.` is added here once, so a new
subpackage (any folder with an `__init__.py` under a room) needs no edit anywhere.
"""
from setuptools import find_packages, setup

# The rooms of the user's layout that are code (tests/ and benchmarks/ are not installed).
ROOMS = ("agent", "probes", "engine", "kernels", "tui", "exporters", "runbooks")

setup(
    package_dir={"gpusleuth": "."},
    packages=[f"gpusleuth.{name}" for name in find_packages(include=[f"{room}*" for room in ROOMS])
              if name.split(".")[0] in ROOMS],
)
