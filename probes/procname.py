"""Thread names (the kernel's `comm`) that gpusleuth's own processes give themselves, so `ps`, /proc and the kernel
probes' culprits tell the engine, the agent, the TUI and the load generator apart (diagnosis contract §1).

A contract between the engine (which sets them) and the agent (which watches `gs-*` by default and names culprits by
comm), so it lives here, the lowest layer both may import. prctl(PR_SET_NAME) renames the calling thread only;
threads started afterwards inherit the name, and the main thread's name is the process's /proc/PID/comm. Written on
ctypes rather than a library (setproctitle's setthreadtitle does the same call): ten lines do not justify a new
dependency on air-gapped GPU hosts.
"""
from __future__ import annotations

import ctypes
import functools
import sys

PR_SET_NAME = 15  # <linux/prctl.h>
MAX_COMM = 15  # TASK_COMM_LEN 16, the NUL included: longer names are cut by the kernel

ENGINE = "gs-engine"  # engine main thread (rank N > 0: gs-engine-r<N>)
STEP = "gs-step"  # the thread that runs scheduler steps (rank N > 0: gs-step-r<N>)
HTTP = "gs-http"  # the engine's HTTP server thread
AGENT = "gs-agent"
TUI = "gs-tui"
LOAD = "gs-load"  # the demo's load generator threads
GIL_HOG = "gs-gil-hog"  # the engine's gil_hog_threads drill
WATCH_PATTERN = "gs-*"  # what the agent's default watch list adds for these


def rank_name(base: str, rank: int) -> str:
    """`base` for rank 0, `base-r<rank>` for the others (gs-engine-r1, gs-step-r3)."""
    return base if rank == 0 else f"{base}-r{rank}"


def set_thread_name(name: str) -> bool:
    """Set the calling thread's comm to `name` (cut to 15 bytes); False where the OS has no prctl."""
    assert name and name.isascii(), f"comm must be non-empty ASCII, got {name!r}"
    if not sys.platform.startswith("linux"):
        return False
    return _libc().prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:MAX_COMM]), 0, 0, 0) == 0


@functools.cache
def _libc() -> ctypes.CDLL:
    # The process's own symbols (libc is loaded in every CPython): no ctypes.util.find_library, which runs
    # ldconfig or a compiler in a subprocess and would delay the thread that asks by a few hundred ms.
    return ctypes.CDLL(None, use_errno=True)
