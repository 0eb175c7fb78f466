"""`agent bundle DIR`: everything an air-gapped GPU host may lack, plus the offline installer that uses it.

DIR/debs/     bcc, its LLVM/clang libraries and a kernel header tree (Debian 12 packages; they run on Ubuntu
              22.04/24.04 and Debian 12 when unpacked under /opt/gpusleuth, never over system files)
DIR/wheels/   gpusleuth itself and the pure-Python dependencies GPU hosts usually lack
DIR/nvtx/     the NVTX injection library (libgsnvtx.so, built here, and its C source): engines opt in with
              NVTX_INJECTION64_PATH=/opt/gpusleuth/lib/libgsnvtx.so
DIR/install.sh    offline install (`bash DIR/install.sh`), undo with `bash DIR/install.sh --uninstall`
DIR/MANIFEST.json names, versions and sha256 of everything inside
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

AGENT_DIR = Path(__file__).resolve().parents[1]  # agent/: the offline installer lives there
REPO = AGENT_DIR.parent  # the checkout the project wheel is built from
DEBS = ("libbpfcc", "python3-bpfcc", "libclang-cpp14", "libllvm14", "libz3-4", "libbpf1", "libedit2")
# Already on typical GPU hosts (and heavy): never bundled. Everything else the agent needs is.
HOST_PROVIDES = {"torch", "triton", "numpy", "pandas", "pyarrow", "transformers", "psutil", "rich", "typer",
                 "httpx", "aiohttp", "pytest", "nvidia-ml-py", "tokenizers", "safetensors", "python-dateutil",
                 "pytz", "tzdata", "six", "packaging", "pygments", "typing-extensions", "markdown-it-py", "mdurl"}
# pydantic brings pydantic-core (a compiled wheel), annotated-types and typing-inspection through its requirements.
AGENT_ROOTS = ("prometheus-client", "textual", "pyroute2", "nvidia-ml-py", "pydantic", "pyyaml", "promql-parser",
               "opentelemetry-proto")
# Bundled when installed here: grpcio (7 MB) for the OTLP/gRPC intake, vLLM's default protocol. Not bundled: mcp
# (`agent mcp` serves an assistant, not the daemon; ~45 MB with what it brings).
OPTIONAL_ROOTS = ("grpcio",)
# The bundled engine's HTTP server (`agent demo` runs it with this Python): FastAPI, uvicorn and their pure-Python
# requirements (starlette, anyio, h11, click, ...); jinja2 for chat templates. httptools, uvicorn's faster parser,
# is a binary wheel left to the host (uvicorn falls back to h11 without it).
ENGINE_ROOTS = ("fastapi", "uvicorn", "jinja2")


class BundleError(Exception):
    """A bundling step failed; the message says which and how to fix it."""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def python_closure(roots: tuple[str, ...], exclude: set[str]) -> dict[str, str]:
    """name -> installed version for `roots` and their runtime requirements (no extras), minus `exclude`."""
    out: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = _norm(todo.pop())
        if name in out or name in exclude:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise BundleError(f"{name} is not installed here; install the project first (agent/install.sh)") from None
        out[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            # markers are evaluated for this Linux machine; GPU hosts are Linux too (extras are never followed)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return out


def download_wheels(packages: dict[str, str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    specs = [f"{n}=={v}" for n, v in sorted(packages.items())]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest), *specs]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BundleError(f"pip download failed for {specs}: {res.stderr.strip()[-400:]}")


def copy_source_tree(dest: Path, root: Path = REPO) -> Path:
    """The checkout's files as git sees them (tracked, and untracked unless ignored) copied to `dest`; without git,
    the tree minus build output, caches and virtual environments."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, text=True)
    if listing.returncode != 0:
        shutil.copytree(root, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "results"))
        return dest
    for rel in filter(None, listing.stdout.split("\0")):
        src = root / rel
        if src.is_file():  # a tracked file deleted in the work tree is listed too
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def build_project_wheel(dest: Path) -> None:
    """The gpusleuth wheel, built from a copy of the tree: setuptools writes build/ and *.egg-info beside setup.py,
    and stale files there would end up in a later wheel."""
    with tempfile.TemporaryDirectory(prefix="gpusleuth-wheel-") as tmp:
        src = copy_source_tree(Path(tmp) / "src")
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
               str(dest.resolve()), str(src)]
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BundleError(f"building the gpusleuth wheel failed (pip wheel .): {res.stderr.strip()[-400:]}")


def header_packages() -> list[str]:
    """The newest Debian amd64 header package and its -common sibling known to apt."""
    out = subprocess.run(["apt-cache", "depends", "linux-headers-amd64"], capture_output=True, text=True).stdout
    names = re.findall(r"Depends: (linux-headers-[\d.]+-\d+-amd64)", out)
    if not names:
        raise BundleError("apt-cache knows no linux-headers-amd64: run `apt-get update` on this Debian machine")
    amd64 = names[0]
    return [amd64, amd64.replace("-amd64", "-common")]


def download_debs(dest: Path, extra: list[str]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    pkgs = [*DEBS, *header_packages(), *extra]
    res = subprocess.run(["apt-get", "download", *pkgs], cwd=dest, capture_output=True, text=True)
    if res.returncode != 0:
        raise BundleError(f"apt-get download failed: {res.stderr.strip()[-400:]} (needs a Debian 12 machine with "
                          "apt sources; run apt-get update first)")


def manifest(root: Path) -> dict:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "MANIFEST.json":
            files[str(p.relative_to(root))] = {"bytes": p.stat().st_size,
                                                "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
    return {"format": 1, "files": files}


def installed_roots() -> tuple[str, ...]:
    """AGENT_ROOTS plus the optional roots this machine has installed."""
    have = []
    for name in OPTIONAL_ROOTS:
        try:
            md.distribution(name)
        except md.PackageNotFoundError:
            continue
        have.append(name)
    return AGENT_ROOTS + tuple(have)


def add_nvtx(dest: Path) -> Path:
    """The NVTX injection library built for the bundle, with its sources beside it."""
    from gpusleuth.probes.nvtx import build as nvtx_build  # noqa: PLC0415

    try:
        lib = nvtx_build.build(dest / nvtx_build.LIBRARY)
    except nvtx_build.BuildError as exc:
        raise BundleError(f"the NVTX injection library: {exc}") from None
    for src in nvtx_build.HERE.glob("gs_nvtx*"):
        shutil.copy2(src, dest / src.name)
    return lib


def build(dest: Path, extra_debs: list[str] | None = None) -> dict:
    """Make the bundle in `dest` (created; must be empty or absent)."""
    if dest.exists() and any(dest.iterdir()):
        raise BundleError(f"{dest} is not empty; choose a new directory")
    download_debs(dest / "debs", extra_debs or [])
    wheels = python_closure(installed_roots() + ENGINE_ROOTS, {_norm(n) for n in HOST_PROVIDES} - {"nvidia-ml-py"})
    download_wheels(wheels, dest / "wheels")
    build_project_wheel(dest / "wheels")
    add_nvtx(dest / "nvtx")
    shutil.copy2(AGENT_DIR / "offline-install.sh", dest / "install.sh")
    (dest / "install.sh").chmod(0o755)
    info = manifest(dest)
    info["python_packages"] = wheels
    (dest / "MANIFEST.json").write_text(json.dumps(info, indent=2))
    return info


def main(argv: list[str]) -> int:
    import argparse  # noqa: PLC0415
    ap = argparse.ArgumentParser(prog="agent bundle", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="examples:\n  agent bundle /tmp/gpusleuth-bundle\n"
                                        "  scp -r /tmp/gpusleuth-bundle gpuhost: && ssh gpuhost sudo bash "
                                        "gpusleuth-bundle/install.sh")
    ap.add_argument("dir", type=Path)
    ap.add_argument("--deb", action="append", default=[], help="another Debian package to include")
    args = ap.parse_args(argv)
    try:
        info = build(args.dir, args.deb)
    except BundleError as exc:
        print(f"agent bundle: {exc}", file=sys.stderr)
        return 2
    total = sum(f["bytes"] for f in info["files"].values())
    print(f"bundle at {args.dir}: {len(info['files'])} files, {total / 2**20:.1f} MiB; "
          f"install on the GPU host with: sudo bash {args.dir}/install.sh")
    return 0
