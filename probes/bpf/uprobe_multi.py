"""uprobe_multi links (Linux 6.6+): one BPF program on many offsets of one file, for one process, with a cookie per
offset (bpf_get_attach_cookie), made with one bpf(BPF_LINK_CREATE) call and removed by closing one descriptor.

bcc 0.26 has no binding for them: its attach_uprobe opens one perf event per uprobe, and closing each one waits for
its own RCU grace period (~0.1 s each on the CPU box, so detaching 80 uprobes from an exited process took 8 s; one
link took 25 ms). Hence this small ctypes call. The program must be loaded with expected_attach_type
BPF_TRACE_UPROBE_MULTI (bcc: `load_func(name, BPF.KPROBE, attach_type=BPF_TRACE_UPROBE_MULTI)`).
"""
from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

BPF_LINK_CREATE = 28
BPF_TRACE_UPROBE_MULTI = 48  # enum bpf_attach_type
BPF_F_UPROBE_MULTI_RETURN = 1
_NR_BPF = {"x86_64": 321, "aarch64": 280}
_ATTR_SIZE = 144  # bytes passed as union bpf_attr; the kernel checks that what it does not know is zero
_BTF = Path("/sys/kernel/btf/vmlinux")


def is_supported() -> bool:
    """The running kernel has uprobe_multi links: its BTF names their struct (no BTF: assume not)."""
    if platform.machine() not in _NR_BPF:
        return False
    try:
        return b"\0bpf_uprobe_multi_link\0" in _BTF.read_bytes()
    except OSError:
        return False


def attach(prog_fd: int, path: str, offsets: list[int], cookies: list[int], pid: int, is_return: bool) -> int:
    """A link of program `prog_fd` on file offsets `offsets` of `path`, only in process `pid`; returns its fd
    (close it to detach). Raises OSError naming the file."""
    assert offsets and len(offsets) == len(cookies), "one cookie per offset"
    libc = ctypes.CDLL(None, use_errno=True)
    n = len(offsets)
    offs, cooks = (ctypes.c_uint64 * n)(*offsets), (ctypes.c_uint64 * n)(*cookies)
    name = ctypes.create_string_buffer(os.fsencode(path))
    attr = (ctypes.c_uint8 * _ATTR_SIZE)()
    for offset, ctype, value in (
        (0, ctypes.c_uint32, prog_fd), (8, ctypes.c_uint32, BPF_TRACE_UPROBE_MULTI),
        (16, ctypes.c_uint64, ctypes.addressof(name)), (24, ctypes.c_uint64, ctypes.addressof(offs)),
        (40, ctypes.c_uint64, ctypes.addressof(cooks)), (48, ctypes.c_uint32, n),
        (52, ctypes.c_uint32, BPF_F_UPROBE_MULTI_RETURN if is_return else 0), (56, ctypes.c_uint32, pid),
    ):  # struct link_create: prog_fd, target_fd, attach_type, flags, then uprobe_multi's fields
        ctype.from_buffer(attr, offset).value = value
    fd = libc.syscall(_NR_BPF[platform.machine()], BPF_LINK_CREATE, ctypes.byref(attr), _ATTR_SIZE)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"uprobe_multi link on {path} (pid {pid}): {os.strerror(err)}")
    return fd
