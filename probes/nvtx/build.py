"""Building the NVTX injection library (gs_nvtx.c beside this file) with gcc, and finding a built one.

The NVTX v3 headers it compiles against come from $NVTX_INCLUDE, the `nvidia-nvtx` wheel (header-only), or a CUDA
toolkit; the library itself needs only libc and pthreads at run time. `python -m gpusleuth.probes.nvtx.build
[OUT]` builds it (agent/install.sh does, into build/ beside the source; `agent bundle` into the bundle).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "gs_nvtx.c"
LIBRARY = "libgsnvtx.so"
DEFAULT_OUT = HERE / "build" / LIBRARY
INSTALLED = (DEFAULT_OUT, Path(sys.prefix) / "lib" / "gpusleuth" / LIBRARY, Path("/opt/gpusleuth/lib") / LIBRARY)


class BuildError(Exception):
    """The library could not be built; the message says what is missing and how to get it."""


def include_dirs() -> list[Path]:
    """Folders that hold nvtx3/nvToolsExt.h, best first."""
    found = []
    if os.environ.get("NVTX_INCLUDE"):
        found.append(Path(os.environ["NVTX_INCLUDE"]))
    for entry in dict.fromkeys([sysconfig.get_paths()["purelib"], *sys.path]):  # nvidia-nvtx wheels, wherever
        site = Path(entry or ".") / "nvidia"
        found += sorted(site.glob("*/include"), reverse=True) + sorted(site.glob("*/*/include"), reverse=True)
    found += [Path("/usr/local/cuda/include"), Path("/usr/include")]
    return [d for d in found if (d / "nvtx3" / "nvToolsExt.h").is_file()]


def build(out: Path = DEFAULT_OUT, cc: str | None = None) -> Path:
    """Compile gs_nvtx.c into `out`; BuildError naming the missing compiler or headers."""
    cc = cc or os.environ.get("CC") or "gcc"
    if shutil.which(cc) is None:
        raise BuildError(f"no C compiler {cc!r}: apt-get install gcc (or set CC)")
    dirs = include_dirs()
    if not dirs:
        raise BuildError("no NVTX v3 headers (nvtx3/nvToolsExt.h): pip install nvidia-nvtx, install the CUDA "
                         "toolkit, or set NVTX_INCLUDE to the folder holding nvtx3/")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [cc, "-O2", "-Wall", "-fPIC", "-shared", "-pthread", f"-I{dirs[0]}", f"-I{HERE}", str(SOURCE), "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed: {res.stderr.strip()[-800:]}")
    return out


def installed() -> Path | None:
    """The built library an engine's NVTX_INJECTION64_PATH should name, if there is one."""
    return next((p for p in INSTALLED if p.is_file()), None)


def main(argv: list[str]) -> int:
    try:
        out = build(Path(argv[0]) if argv else DEFAULT_OUT)
    except BuildError as exc:
        print(f"nvtx build: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
