"""What every bcc-based probe shares: host checks, compiling C text with #define flags, map read-and-clear."""
from __future__ import annotations

import ctypes
import logging
import os
import platform
from pathlib import Path
from typing import Any, Iterable

from gpusleuth.probes.base import ProbeUnavailable, Requirement

log = logging.getLogger(__name__)

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
    """Raise ProbeUnavailable naming the first unmet requirement and its fix."""
    for req in reqs:
        if not req.is_met:
            raise ProbeUnavailable(f"{req.name} missing ({req.detail}): {req.how_to_fix}")


def render_source(c_file: Path, defines: dict[str, int | str]) -> str:
    """The BPF C text: #define flags first, then the file beside the loader (bcc syscount's way to specialise)."""
    lines = [f"#define {k} {v}" for k, v in defines.items()]
    return "\n".join(lines) + "\n" + c_file.read_text()


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


def drain(table: Any) -> list[tuple[Any, Any]]:
    """Read and clear a BPF hash map: one batch syscall where the kernel has it, else lookup then delete."""
    try:
        return list(table.items_lookup_and_delete_batch())
    except Exception as exc:  # older kernels: EINVAL/ENOTSUPP from the batch op
        log.debug("batch lookup-and-delete unavailable (%s); falling back", exc)
    items = list(table.items())
    for key, _ in items:
        try:
            del table[key]
        except KeyError:
            pass
    return items


def set_members(table: Any, members: Iterable[int], key_type: Any = ctypes.c_uint32) -> None:
    """Make a BPF hash `table` (key -> u8) hold exactly `members`."""
    wanted = set(members)
    present = {k.value for k in table.keys()}
    for k in present - wanted:
        try:
            del table[key_type(k)]
        except KeyError:
            pass
    for k in wanted - present:
        table[key_type(k)] = ctypes.c_uint8(1)


def has_kernel_btf() -> bool:
    """Kernel BTF is what task-local storage and BTF task pointers need."""
    return os.path.exists("/sys/kernel/btf/vmlinux")


def sum_percpu(value: Any) -> Any:
    """A per-CPU map value arrives as an array of per-CPU structs: add them up field by field."""
    if not isinstance(value, ctypes.Array):
        return value
    total = type(value[0])()
    for field_name, _ in total._fields_:
        setattr(total, field_name, sum(getattr(v, field_name) for v in value))
    return total


def comm_str(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


MADV_PAGEOUT = 21


def release_compiler_memory() -> int:
    """Hand LLVM/clang's pages back to the kernel once every BPF program is compiled; returns bytes advised.

    bcc compiles in-process, which pulls ~100 MB of LLVM code and heap into the agent for a job done only at
    start. Those file-backed pages are clean (re-read from disk if a later compile needs them), so paging them
    out is safe; malloc_trim returns the compiler's freed heap.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return 0
    for line in maps:
        fields = line.split()
        if len(fields) < 6 or not any(lib in fields[5] for lib in ("libLLVM", "libclang", "libbcc")):
            continue
        if "w" in fields[1]:  # only read-only / executable mappings: never touch writable data
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if libc.madvise(start, end - start, MADV_PAGEOUT) == 0:
            advised += end - start
    try:
        libc.malloc_trim(0)
    except AttributeError:  # not glibc
        pass
    return advised
