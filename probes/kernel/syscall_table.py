"""Syscall number -> name for the running kernel's architecture.

Numbers come from the kernel's generated uapi table (unistd_64.h of the running kernel's header tree, else libc's
copy). Kept by hand rather than taken from a library: the table must match the running kernel's architecture
(x86_64 and aarch64 number syscalls differently), which only the kernel's own header gives.

Also the idle-wait list: syscalls a thread makes to wait for work, which diagnosis never blames.
"""
from __future__ import annotations

import functools
import platform
import re
from pathlib import Path

# Syscalls a thread makes to wait for work (event loops, condition variables, sleeps): long by design, so they
# are shown in timelines but never blamed. A stall is an fsync, a page-cache miss, an mmap under memory pressure...
WAIT_SYSCALLS = frozenset({
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6", "futex", "futex_waitv",
    "nanosleep", "clock_nanosleep", "wait4", "waitid", "pause", "rt_sigtimedwait", "rt_sigsuspend", "accept",
    "accept4", "recvfrom", "recvmsg", "recvmmsg", "io_getevents", "io_uring_enter", "sched_yield",
})

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


def syscall_name(nr: int) -> str:
    return syscall_table().get(nr, f"syscall_{nr}")


def syscall_number(name: str) -> int | None:
    for nr, n in syscall_table().items():
        if n == name:
            return nr
    return None
