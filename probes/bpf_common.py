"""What every bcc-based probe shares: host checks, compiling C text with #define flags, map read-and-clear."""
from __future__ import annotations

import ctypes
import errno
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


def drain(table: Any, chunk: int = 512) -> list[tuple[Any, Any]]:
    """Read and clear a BPF hash map with the kernel's batch lookup-and-delete, `chunk` entries at a time.

    bcc's own batch reader allocates buffers for the map's max_entries on every call (megabytes per poll for a
    64k-entry map); fixed small buffers keep an idle poll cheap. Falls back to lookup-then-delete on old kernels.
    """
    from bcc.libbcc import lib  # noqa: PLC0415

    keys, values = (table.Key * chunk)(), (table.Leaf * chunk)()
    in_batch, out_batch, count = ctypes.c_uint32(0), ctypes.c_uint32(0), ctypes.c_uint32(0)
    out: list[tuple[Any, Any]] = []
    first = True
    while True:
        count.value = chunk
        res = lib.bpf_lookup_and_delete_batch(table.map_fd, None if first else ctypes.byref(in_batch),
                                              ctypes.byref(out_batch), ctypes.byref(keys), ctypes.byref(values),
                                              ctypes.byref(count))
        err = ctypes.get_errno()
        for i in range(count.value):
            out.append((_copy(keys[i]), _copy(values[i])))
        if res == 0:
            in_batch.value, first = out_batch.value, False
            continue
        if err == errno.ENOENT:  # the whole map has been walked
            return out
        if first and err in (errno.EINVAL, errno.ENOTSUPP if hasattr(errno, "ENOTSUPP") else 524):
            return out + _drain_slow(table)
        raise OSError(err, f"batch lookup-and-delete on BPF map {table.name!r} failed")


def _copy(item: Any) -> Any:
    """Detach an element from the reused buffer (scalar elements already arrive as plain ints)."""
    return item if isinstance(item, (int, float)) else type(item).from_buffer_copy(item)


def _drain_slow(table: Any) -> list[tuple[Any, Any]]:
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


MADV_DONTNEED = 4
_COMPILER_LIBS = ("libLLVM", "libclang")


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
