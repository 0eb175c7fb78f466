"""Which CUDA, NCCL and gloo libraries a process maps (/proc/PID/maps), and which of the probe's functions each one
exports, at which address.

The driver (libcuda.so.*) is always mapped once a process uses CUDA; the runtime (libcudart.so.*) is usually a
separate library (pip's nvidia-cuda-runtime wheel, or the CUDA toolkit), but may be linked statically into another
library with its symbols hidden: then only the driver API is seen, which is where every launch, graph launch, copy,
sync and allocation ends up anyway (symbols.py). NCCL is libnccl.so.* (pip's nvidia-nccl-cu* wheel) and is often
loaded only when the first communicator is made; gloo is compiled into libtorch_cpu.so.

Symbols are read with bcc's ELF reader, the same one that resolves them when the uprobes are attached, once per
library file (keyed by device, inode and mtime, so every process mapping the same file shares the result).
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from typing import Callable

from gpusleuth.probes.cuda.symbols import ALL_FUNCTIONS, FN_IDS, Fn, matches, symbol_regex

LIBRARY_FILES: dict[str, re.Pattern[str]] = {
    "driver": re.compile(r"^libcuda\.so(\.\d+)*$"),
    "runtime": re.compile(r"^libcudart\.so(\.\d+)*$"),
    "nccl": re.compile(r"^libnccl\.so(\.\d+)*$"),
    "gloo": re.compile(r"^libtorch_cpu\.so$"),
}


@dataclass(slots=True, frozen=True)
class Resolved:
    """One symbol of a library that the probe attaches to: its function id (symbols.FN_IDS), name, address (ELF
    virtual address) and file offset (what uprobes are placed by)."""

    fn_id: int
    symbol: str
    address: int
    offset: int = 0

    @property
    def fn(self) -> Fn:
        return ALL_FUNCTIONS[self.fn_id]


def mapped_libraries(pid: int) -> dict[str, str]:
    """{kind: path} of the probe's libraries that process `pid` maps executable (paths as the process sees them;
    empty if the process is gone or unreadable)."""
    found: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                if len(fields) < 6 or "x" not in fields[1]:
                    continue
                path = fields[5].strip()
                if path.endswith(" (deleted)"):
                    continue  # replaced on disk since it was mapped: the file we could open is not this one
                base = path.rsplit("/", 1)[-1]
                for kind, pattern in LIBRARY_FILES.items():
                    if kind not in found and pattern.match(base):
                        found[kind] = path
    except OSError:
        return {}
    return {kind: found[kind] for kind in LIBRARY_FILES if kind in found}


def host_path(pid: int, path: str) -> str:
    """`path` as this process can open it: through /proc/PID/root, so libraries inside containers are found."""
    return f"/proc/{pid}/root{path}"


def _bcc_symbols(path: str, regex: str) -> list[tuple[str, int]]:
    from gpusleuth.probes.bpf.host import import_bcc  # noqa: PLC0415  (bcc only where symbols are read)

    bcc = import_bcc()
    return [(n.decode(errors="replace"), a) for n, a in bcc.BPF.get_user_functions_and_addresses(path, regex)]


class SymbolCache:
    """Resolved symbols per library file, read once per (device, inode, mtime)."""

    def __init__(self, reader: Callable[[str, str], list[tuple[str, int]]] = _bcc_symbols) -> None:
        self._reader = reader
        self._cache: dict[tuple[int, int, int, str], list[Resolved]] = {}

    def resolve(self, path: str, kind: str) -> list[Resolved]:
        """The probe's functions that library `path` (openable by this process) exports, one per address.

        Raises OSError if the file cannot be read."""
        st = os.stat(path)
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, kind)
        if key not in self._cache:
            resolved = resolve_symbols(self._reader(path, symbol_regex(kind)), kind)
            offsets = file_offsets(path, [r.address for r in resolved])
            self._cache[key] = [Resolved(r.fn_id, r.symbol, r.address, offsets[r.address]) for r in resolved
                                if r.address in offsets]
        return self._cache[key]


def file_offsets(path: str, addresses: list[int]) -> dict[int, int]:
    """ELF virtual address -> file offset, through the PT_LOAD segment holding it (what bcc does before it attaches
    a uprobe by address); addresses in no segment are left out. Raises OSError for an unreadable or non-ELF file.

    Read by hand because the probe needs only the program headers of an ELF64 file: a few structs."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            raise OSError(f"{path} is not a 64-bit ELF file")
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    loads = []
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, _filesz, p_memsz = struct.unpack_from("<IIQQQQQ", table,
                                                                                        i * phentsize)
        if p_type == 1:  # PT_LOAD
            loads.append((p_vaddr, p_memsz, p_offset))
    out = {}
    for addr in addresses:
        for vaddr, memsz, offset in loads:
            if vaddr <= addr < vaddr + memsz:
                out[addr] = addr - vaddr + offset
                break
    return out


def resolve_symbols(symbols: list[tuple[str, int]], kind: str) -> list[Resolved]:
    """Our functions among (name, address) pairs of a `kind` library: local fragments (`.cold`) dropped, one entry
    per address (an alias such as pncclAllReduce, or a name in both .symtab and .dynsym, is one function)."""
    fns = [f for f in ALL_FUNCTIONS if f.lib == kind]
    by_address: dict[int, Resolved] = {}
    for name, address in symbols:
        if "." in name or address == 0 or address in by_address:
            continue
        fn = next((f for f in fns if matches(f, name)), None)
        if fn is not None:
            by_address[address] = Resolved(FN_IDS[fn.name], name, address)
    return sorted(by_address.values(), key=lambda r: (r.fn_id, r.symbol))


def missing_functions(kind: str, resolved: list[Resolved]) -> list[str]:
    """Functions of `kind` with no form in the library (e.g. ncclAlltoAll before NCCL 2.28)."""
    have = {r.fn_id for r in resolved}
    return [f.name for f in ALL_FUNCTIONS if f.lib == kind and FN_IDS[f.name] not in have]


def parent_pid(pid: int) -> int:
    """The parent of `pid` (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def job_environment(pid: int) -> str:
    """MASTER_ADDR:MASTER_PORT from the process's environment (torchrun, SLURM scripts and most launchers set them:
    every rank of one job has the same), or '' where absent or unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    except OSError:
        return ""
    addr, port = env.get(b"MASTER_ADDR"), env.get(b"MASTER_PORT")
    return f"{addr.decode(errors='replace')}:{port.decode(errors='replace')}" if addr and port else ""
