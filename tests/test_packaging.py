"""Packaging where the tree is the truth: a wheel built from the tree installs every module and the package data,
and runs from a fresh virtual environment; the editable install finds a subpackage nobody declared.

The wheel is built from a copy of the checkout's files (setuptools writes build/ and *.egg-info next to setup.py),
so the checkout stays clean. The fresh venv gets its dependencies from this venv's site-packages through a .pth
line: site does not process .pth files inside a folder a .pth line adds, so this venv's editable finder is not
picked up, and `gpusleuth` can only come from the wheel.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from gpusleuth.agent.cli.bundle import copy_source_tree
from tests.tree_helpers import PACKAGE, ROOT, modules

# Package data the agent reads at run time, by kind (setup: [tool.setuptools.package-data] in pyproject.toml).
DATA = {"BPF C": "probes/**/*.c", "BPF headers": "probes/**/*.h", "TUI stylesheet": "tui/*.tcss",
        "runbooks": "runbooks/*.md", "install scripts": "agent/*.sh", "systemd unit": "agent/*.service"}

IMPORT_ALL = """
import importlib, json, pkgutil, sys, gpusleuth
names, failed = [], {}
for info in pkgutil.walk_packages(gpusleuth.__path__, "gpusleuth.", onerror=lambda n: failed.setdefault(n, "walk")):
    try:
        importlib.import_module(info.name)
        names.append(info.name)
    except Exception as exc:  # report every module that fails, not just the first
        failed[info.name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"path": list(gpusleuth.__path__), "imported": names, "failed": failed}))
"""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PIP_ROOT_USER_ACTION="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _parent_site_lines() -> list[str]:
    """This venv's site-packages, plus the plain folder lines of its .pth files (the OS bcc link), not imports."""
    site = Path(sysconfig.get_paths()["purelib"])
    lines = [str(site), sysconfig.get_paths()["platlib"]]
    for pth in sorted(site.glob("*.pth")):
        lines += [ln for ln in pth.read_text().splitlines() if ln.strip() and not ln.startswith(("import", "#"))]
    return list(dict.fromkeys(lines))


def _unmet_build_requirements() -> list[str]:
    """pyproject's build requirements this venv lacks (the wheel is built without isolation: no network)."""
    from packaging.requirements import Requirement  # noqa: PLC0415

    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    unmet = []
    for req in map(Requirement, wanted):
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            have = None
        if have is None or not req.specifier.contains(have, prereleases=True):
            unmet.append(f"{req} (this venv has {have or 'none'})")
    return unmet


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory) -> dict:
    """Build the wheel from a copy of the tree, install it into a fresh venv; the venv's paths and the tree."""
    if unmet := _unmet_build_requirements():
        pytest.skip(f"building the wheel offline needs {', '.join(unmet)}: pip install them into this venv")
    tmp = tmp_path_factory.mktemp("packaging")
    had_build = (ROOT / "build").exists()
    src = copy_source_tree(tmp / "src")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "--wheel-dir", str(tmp / "dist"), str(src)], cwd=tmp)
    wheel = next((tmp / "dist").glob("gpusleuth-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "_gpusleuth_test_deps.pth").write_text("\n".join(_parent_site_lines()) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)])
    assert (ROOT / "build").exists() == had_build, "building the wheel wrote build/ into the checkout"
    return {"tmp": tmp, "py": py, "bin": venv / "bin", "site": site, "src": src}


def test_wheel_imports_every_module_of_the_tree_from_the_fresh_venv(wheel_install):
    out = json.loads(_run([str(wheel_install["py"]), "-c", IMPORT_ALL], cwd=wheel_install["tmp"]).stdout)
    assert out["path"] == [str(wheel_install["site"] / PACKAGE)], "gpusleuth did not come from the wheel"
    assert out["failed"] == {}
    tree = set(modules(wheel_install["src"]))
    assert set(out["imported"]) == tree, (
        f"in the tree, not installed: {sorted(tree - set(out['imported']))}; "
        f"installed, not in the tree: {sorted(set(out['imported']) - tree)}")
    assert not any(n.startswith(("gpusleuth.tests", "gpusleuth.benchmarks")) for n in out["imported"])


def test_wheel_carries_the_package_data(wheel_install):
    installed = wheel_install["site"] / PACKAGE
    for kind, pattern in DATA.items():
        files = sorted(p.relative_to(wheel_install["src"]) for p in wheel_install["src"].glob(pattern))
        assert files, f"no {kind} ({pattern}) in the tree: is DATA out of date?"
        missing = [str(f) for f in files if not (installed / f).is_file()]
        assert not missing, f"{kind} not in the wheel: {missing}"


def test_wheel_runs_the_agent_and_the_engine_commands(wheel_install):
    probes = _run([str(wheel_install["bin"] / "agent"), "probes"], cwd=wheel_install["tmp"])
    for name in ("syscalls", "sched", "net", "gpu", "spans"):
        assert f"{name} (enabled)" in probes.stdout
    engine = _run([str(wheel_install["py"]), "-m", "gpusleuth.engine", "--help"], cwd=wheel_install["tmp"])
    assert "serve" in engine.stdout and "generate" in engine.stdout


def test_editable_install_finds_an_undeclared_subpackage(tmp_path):
    name = f"_tmp_newroom_{os.getpid()}"
    pkg = ROOT / "probes" / name
    pkg.mkdir()
    try:
        (pkg / "__init__.py").write_text("VALUE = 42\n")
        code = f"import gpusleuth.probes.{name} as m; print(m.VALUE, m.__file__)"
        out = _run([sys.executable, "-c", code], cwd=tmp_path).stdout.split()
    finally:
        shutil.rmtree(pkg)
    assert out == ["42", str(pkg / "__init__.py")]
