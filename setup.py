"""Packaging: the repository root *is* the `gpusleuth` package, so `probes/gpu/nvml.py` is `gpusleuth.probes.gpu.nvml`.

Everything else is in pyproject.toml. Only the package list needs code: setuptools' automatic discovery names
packages after their folders (`agent`), and the namespace prefix `gpusleuth.` is added here once. The tree is the
truth: every folder with an `__init__.py` (a room at the top, a subpackage below it) is installed, with no edit
anywhere. tests/ and benchmarks/ have no `__init__.py`; they are excluded by name as well, so they never install.
"""
from setuptools import find_packages, setup

NOT_INSTALLED = ["tests", "tests.*", "benchmarks", "benchmarks.*"]

setup(
    package_dir={"gpusleuth": "."},
    packages=[f"gpusleuth.{name}" for name in find_packages(exclude=NOT_INSTALLED)],
)
