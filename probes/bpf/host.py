"""What the host must have for a bcc probe: privileges, the bcc binding, kernel headers, tracefs and tracepoints,
each checked now and reported as a Requirement with its fix; and what probes size themselves by (kernel version,
possible CPUs)."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Iterable

from gpusleuth.probes.base import ProbeUnavailable, Requirement

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39


def effective_caps() -> int:
    """This process's effective capability mask, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def has_bpf_privileges(need_net_admin: bool = False) -> bool:
    """Root, or CAP_BPF + CAP_PERFMON (+ CAP_NET_ADMIN for tc), or CAP_SYS_ADMIN on older kernels."""
    caps = effective_caps()
    has = lambda cap: bool(caps & (1 << cap))  # noqa: E731
    if has(CAP_SYS_ADMIN) and (not need_net_admin or has(CAP_NET_ADMIN)):
        return True
    return has(CAP_BPF) and has(CAP_PERFMON) and (not need_net_admin or has(CAP_NET_ADMIN))


def tracefs_root() -> str | None:
    for d in TRACEFS_DIRS:
        if os.path.isdir(os.path.join(d, "events")):
            return d
    return None


def tracepoint_exists(category: str, event: str) -> bool:
    root = tracefs_root()
    return bool(root) and os.path.isdir(os.path.join(root, "events", category, event))


def headers_dir() -> Path:
    return Path("/lib/modules") / platform.release() / "build"


def import_bcc() -> Any:
    """The bcc module, or ProbeUnavailable saying how to get it."""
    try:
        import bcc  # noqa: PLC0415  (optional OS package, loaded only when a probe starts)
    except ImportError as exc:
        raise ProbeUnavailable(
            f"bcc Python binding not importable ({exc}); install the OS package python3-bpfcc "
            "(agent/install.sh does, and exposes it to the virtual environment)") from None
    return bcc


def bpf_requirements(tracepoints: Iterable[tuple[str, str]], need_net_admin: bool = False) -> list[Requirement]:
    """Checks common to bcc probes: privileges, bcc, kernel headers, tracefs and the tracepoints used."""
    try:
        import_bcc()
        bcc_ok, bcc_detail = True, "python3-bpfcc importable"
    except ProbeUnavailable as exc:
        bcc_ok, bcc_detail = False, str(exc)
    caps = "CAP_BPF + CAP_PERFMON" + (" + CAP_NET_ADMIN" if need_net_admin else "")
    reqs = [
        Requirement("privileges", has_bpf_privileges(need_net_admin), f"root or {caps}",
                    "run as root (sudo agent start) or grant the capabilities to the service"),
        Requirement("bcc", bcc_ok, bcc_detail, "apt-get install python3-bpfcc bpfcc-tools"),
        Requirement("kernel headers", headers_dir().exists(), str(headers_dir()),
                    "install linux-headers for this kernel, or run agent/install.sh to link a packaged tree"),
        Requirement("tracefs", tracefs_root() is not None, tracefs_root() or "not mounted",
                    "mount -t tracefs nodev /sys/kernel/tracing"),
    ]
    for category, event in tracepoints:
        reqs.append(Requirement(f"tracepoint {category}:{event}", tracepoint_exists(category, event),
                                "", "a kernel built with CONFIG_FTRACE_SYSCALLS / tracepoints"))
    return reqs


def check_requirements(reqs: list[Requirement]) -> None:
    """Raise ProbeUnavailable naming the first unmet requirement (optional ones aside) and its fix."""
    for req in reqs:
        if not req.is_met and not req.is_optional:
            raise ProbeUnavailable(f"{req.name} missing ({req.detail}): {req.how_to_fix}")


def has_kernel_btf() -> bool:
    """Kernel BTF is what task-local storage and BTF task pointers need."""
    return os.path.exists("/sys/kernel/btf/vmlinux")


def kernel_version() -> tuple[int, int]:
    """(major, minor) of the running kernel."""
    parts = platform.release().split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def possible_cpus(path: Path = Path("/sys/devices/system/cpu/possible")) -> int:
    """How many CPU ids the kernel may use ("0-127" -> 128): the size of per-CPU tables."""
    try:
        text = path.read_text().strip()
    except OSError:
        return 1024
    return max(int(r.split("-")[-1]) for r in text.split(",")) + 1
