"""Syscall number -> name for the running kernel's architecture.

Numbers come from the kernel's generated uapi table (unistd_64.h of the running kernel's header tree, else libc's
copy); names are checked against the syscalls the running kernel actually traces (tracefs events/syscalls).
"""
from __future__ import annotations

import functools
import os
import platform
import re
from pathlib import Path

from gpusleuth.probes.bpf_common import tracefs_root

_NR_RE = re.compile(r"^#define\s+__NR_(\w+)\s+(\d+)\s*$", re.M)


def _candidate_headers() -> list[Path]:
    machine = platform.machine()
    build = Path("/lib/modules") / platform.release() / "build"
    if machine == "x86_64":
        return [build / "arch/x86/include/generated/uapi/asm/unistd_64.h",
                Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"), Path("/usr/include/asm/unistd_64.h")]
    if machine == "aarch64":
        return [build / "arch/arm64/include/generated/uapi/asm/unistd_64.h",
                Path("/usr/include/aarch64-linux-gnu/asm/unistd_64.h"), Path("/usr/include/asm-generic/unistd.h")]
    return [Path("/usr/include/asm/unistd_64.h")]


@functools.lru_cache(maxsize=1)
def syscall_table() -> dict[int, str]:
    """The number -> name table, or {} when no table is found (names then read 'syscall_<nr>')."""
    for header in _candidate_headers():
        try:
            text = header.read_text()
        except OSError:
            continue
        table = {int(nr): name for name, nr in _NR_RE.findall(text)}
        if table:
            return table
    return {}


@functools.lru_cache(maxsize=1)
def traced_syscalls() -> frozenset[str]:
    """Names of syscalls the running kernel has sys_enter tracepoints for."""
    root = tracefs_root()
    if not root:
        return frozenset()
    try:
        entries = os.listdir(os.path.join(root, "events", "syscalls"))
    except OSError:
        return frozenset()
    return frozenset(e[len("sys_enter_"):] for e in entries if e.startswith("sys_enter_"))


def syscall_name(nr: int) -> str:
    return syscall_table().get(nr, f"syscall_{nr}")


def syscall_number(name: str) -> int | None:
    for nr, n in syscall_table().items():
        if n == name:
            return nr
    return None
