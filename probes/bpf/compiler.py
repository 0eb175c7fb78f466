"""Compiling a probe's C text with bcc (specialised with #define flags), and giving back the compiler's memory."""
from __future__ import annotations

import ctypes
import logging
import re
from pathlib import Path
from typing import Any

from gpusleuth.probes.base import ProbeUnavailable
from gpusleuth.probes.bpf.host import headers_dir, import_bcc

log = logging.getLogger(__name__)
MADV_DONTNEED = 4
_COMPILER_LIBS = ("libLLVM", "libclang")
# The shared header (count_lost, event submit) every probe's C text includes; bcc resolves #include "..." against
# the working directory, so its text is put in front instead.
COMMON_HEADER = Path(__file__).with_name("common.h")


_LOCAL_INCLUDE = re.compile(r'^#include "([\w.-]+)"[ \t]*$', re.M)


def render_source(c_file: Path, defines: dict[str, int | str]) -> str:
    """The BPF C text: #define flags first, then the file beside the loader (bcc syscount's way to specialise), with
    each `#include "name"` replaced by that file's text: a file beside `c_file`, else one of the shared headers
    beside common.h (lifecycle.h) (bcc compiles from memory, with no include path, so a probe's C split into parts is put together here)."""
    lines = [f"#define {k} {v}" for k, v in defines.items()]

    def inline(match: re.Match) -> str:
        name = match.group(1)
        beside = c_file.with_name(name)
        return (beside if beside.exists() else COMMON_HEADER.with_name(name)).read_text()

    return "\n".join(lines) + "\n" + _LOCAL_INCLUDE.sub(inline, c_file.read_text())


def compile_bpf(text: str) -> Any:
    """Compile and load with bcc; turn compiler/verifier failures into ProbeUnavailable with the reason."""
    bcc = import_bcc()
    try:
        return bcc.BPF(text=text, cflags=["-Wno-macro-redefined", "-Wno-unused-value"])
    except Exception as exc:  # bcc raises bare Exception for compile and load errors
        hint = ""
        if not headers_dir().exists():
            hint = f"; kernel headers missing at {headers_dir()} (run agent/install.sh)"
        raise ProbeUnavailable(f"BPF program failed to compile or load: {exc}{hint}") from None


def _clean_file_mappings(names: tuple[str, ...]) -> list[tuple[int, int]]:
    """(start, end) of read-only / executable mappings of the named libraries that hold no private (COW) pages."""
    out, current = [], None
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:
            current = None
            perms, path = fields[1], (fields[5] if len(fields) > 5 else "")
            if "w" not in perms and perms.endswith("p") and any(n in path for n in names):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                current = [start, end, 0]
                out.append(current)
        elif current is not None and fields[0] in ("Anonymous:", "Private_Dirty:"):
            current[2] += int(fields[1])
    return [(a, b) for a, b, private in out if private == 0]


def release_compiler_memory() -> int:
    """Drop LLVM/clang's pages from this process once every BPF program is compiled; returns bytes released.

    bcc compiles in-process, which maps ~100 MB of LLVM code into the agent for a job done only at start. Only
    clean file-backed mappings are dropped (text and read-only data with no private copies, so never relocated
    RELRO pages): a later compile simply faults them back in from the page cache. malloc_trim returns the
    compiler's freed heap.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    for start, end in _clean_file_mappings(_COMPILER_LIBS):
        if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
            released += end - start
    try:
        libc.malloc_trim(0)
    except AttributeError:  # not glibc
        pass
    return released
