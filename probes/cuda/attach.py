"""Attaching the cuda probe's uprobes to one process at a time, and detaching them when it exits or leaves the watch.

Uprobes are attached per process: the kernel then plants its breakpoints only in that process's memory, so other
processes using the same libcuda pay nothing, and every thread of the process is covered (checked against the
fake library in tests/test_cuda_probe.py). Two ways, chosen at start (probe.py):
- uprobe_multi links (Linux 6.6+): per library, one link for every entry and one for every return, each offset
  carrying its function id as the cookie; two file descriptors per library, torn down in one step each;
- one perf event per uprobe (bcc's attach_uprobe), for older kernels: a file descriptor each, and closing each one
  waits for an RCU grace period (so detaching a process takes ~0.1 s per uprobe on the CPU box).
"""
from __future__ import annotations

import logging
import os
import resource
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from gpusleuth.probes.bpf import uprobe_multi
from gpusleuth.probes.cuda.discovery import (Resolved, SymbolCache, host_path, mapped_libraries,
                                              missing_functions)
from gpusleuth.probes.kernel.proc_info import is_alive

log = logging.getLogger(__name__)


class Linker(Protocol):
    """How uprobes are placed: `attach` returns handles for `detach`."""

    def attach(self, pid: int, path: str, symbols: list[Resolved]) -> list[Any]: ...

    def detach(self, handle: Any) -> None: ...


class MultiLinker:
    """uprobe_multi links of the two programs e_any / r_any (the cookie is the function id)."""

    path_name = "uprobe_multi links"

    def __init__(self, entry_fd: int, return_fd: int) -> None:
        self._entry_fd, self._return_fd = entry_fd, return_fd

    def attach(self, pid: int, path: str, symbols: list[Resolved]) -> list[Any]:
        target = host_path(pid, path)
        fds = [uprobe_multi.attach(self._entry_fd, target, [r.offset for r in symbols], [r.fn_id for r in symbols],
                                   pid, is_return=False)]
        returns = [r for r in symbols if r.fn.family.has_return]
        if returns:
            try:
                fds.append(uprobe_multi.attach(self._return_fd, target, [r.offset for r in returns],
                                               [r.fn_id for r in returns], pid, is_return=True))
            except OSError:
                os.close(fds[0])
                raise
        return fds

    def detach(self, handle: Any) -> None:
        os.close(handle)


class PerfLinker:
    """One perf event per uprobe through bcc (programs e_<id> and r_<family>)."""

    path_name = "perf event uprobes"

    def __init__(self, bpf: Any, max_uprobes: int) -> None:
        self._bpf = bpf
        # bcc counts uprobes against its own global quota (1000 unless BCC_PROBE_LIMIT says otherwise), and each
        # perf event is an open file.
        os.environ.setdefault("BCC_PROBE_LIMIT", str(max_uprobes + 1024))
        raise_fd_limit(max_uprobes + 4096)

    def attach(self, pid: int, path: str, symbols: list[Resolved]) -> list[Any]:
        before = set(self._bpf.uprobe_fds)
        try:
            for r in symbols:
                self._bpf.attach_uprobe(name=path, addr=r.address, fn_name=f"e_{r.fn_id}", pid=pid)
                if r.fn.family.has_return:
                    self._bpf.attach_uretprobe(name=path, addr=r.address, fn_name=f"r_{int(r.fn.family)}", pid=pid)
        except Exception as exc:  # bcc: a bare Exception on attach failure (process gone, quota, EMFILE)
            for ev in sorted(set(self._bpf.uprobe_fds) - before):
                self.detach(ev)
            raise OSError(f"attaching uprobes to {path}: {exc}") from None
        return sorted(set(self._bpf.uprobe_fds) - before)

    def detach(self, handle: Any) -> None:
        self._bpf.detach_uprobe_event(handle)


@dataclass(slots=True)
class LibraryAttach:
    """One library of one process: what resolved, what is missing, and what was attached to it."""

    kind: str
    path: str  # as the process sees it
    resolved: list[Resolved] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    handles: list[Any] = field(default_factory=list)  # the linker's, to detach
    uprobes: int = 0  # entry and return uprobes placed
    error: str = ""


@dataclass(slots=True)
class ProcessAttach:
    pid: int
    libraries: dict[str, LibraryAttach] = field(default_factory=dict)
    next_scan: float = 0.0


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file soft limit towards `wanted` (bounded by the hard limit); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class Attacher:
    """Keeps the uprobes of every watched process in step with the libraries it maps."""

    def __init__(self, linker: Linker, kinds: list[str], skip: set[int], max_uprobes: int, rescan_s: float,
                 symbols: SymbolCache | None = None) -> None:
        self._linker = linker
        self._kinds = kinds
        self._skip = skip  # function ids not to attach (launches = "off")
        self._max = max_uprobes
        self._rescan_s = rescan_s
        self._symbols = symbols or SymbolCache()
        self.processes: dict[int, ProcessAttach] = {}
        self.refused = 0  # uprobes not attached because max_uprobes was reached

    @property
    def num_uprobes(self) -> int:
        return sum(lib.uprobes for p in self.processes.values() for lib in p.libraries.values())

    def sync(self, tgids: frozenset[int]) -> list[int]:
        """Attach to watched processes' newly mapped libraries; detach from processes gone or no longer watched
        (returned)."""
        now = time.monotonic()
        left = [p for p in self.processes if p not in tgids or not is_alive(p)]
        for pid in left:
            self.detach(pid)
        for pid in tgids:
            proc = self.processes.setdefault(pid, ProcessAttach(pid))
            if now >= proc.next_scan:
                proc.next_scan = now + self._rescan_s
                self._scan(proc)
        return left

    def _scan(self, proc: ProcessAttach) -> None:
        for kind, path in mapped_libraries(proc.pid).items():
            if kind in self._kinds and kind not in proc.libraries:
                proc.libraries[kind] = self._attach_library(proc.pid, kind, path)

    def _attach_library(self, pid: int, kind: str, path: str) -> LibraryAttach:
        lib = LibraryAttach(kind, path)
        try:
            lib.resolved = self._symbols.resolve(host_path(pid, path), kind)
        except Exception as exc:  # OSError from the file; bcc raises a bare Exception when it cannot read the ELF
            lib.error = f"cannot read symbols of {path}: {exc}"
            return lib
        lib.missing = missing_functions(kind, lib.resolved)
        wanted = [r for r in lib.resolved if r.fn_id not in self._skip]
        uprobes = len(wanted) + sum(r.fn.family.has_return for r in wanted)
        if not wanted:
            return lib
        if self.num_uprobes + uprobes > self._max:
            self.refused += uprobes
            lib.error = f"not attached: probes.cuda.max_uprobes ({self._max}) reached"
            return lib
        try:
            lib.handles = self._linker.attach(pid, path, wanted)
            lib.uprobes = uprobes
        except OSError as exc:
            lib.error = str(exc)
            log.warning("cuda probe: pid %d: %s", pid, lib.error)
        log.info("cuda probe: pid %d %s %s: %d symbols, %d uprobes", pid, kind, path, len(lib.resolved), lib.uprobes)
        return lib

    def detach(self, pid: int) -> None:
        """Remove every uprobe of `pid` (one that exited still leaves descriptors to close)."""
        proc = self.processes.pop(pid, None)
        if proc is None:
            return
        for lib in proc.libraries.values():
            for handle in lib.handles:
                try:
                    self._linker.detach(handle)
                except Exception as exc:  # OSError, or bcc's bare Exception: keep detaching the rest
                    log.debug("cuda probe: detaching %r: %s", handle, exc)
            lib.handles, lib.uprobes = [], 0

    def detach_all(self) -> None:
        for pid in list(self.processes):
            self.detach(pid)
