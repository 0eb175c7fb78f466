"""Attaching the cuda probe's uprobes to one process at a time, and detaching them when it exits or leaves the watch.

Uprobes are attached per process (perf_event_open with the pid): the kernel then plants its breakpoints only in that
process's memory, so other processes using the same libcuda pay nothing, and every thread of the process is covered
(checked against the fake library in tests/test_cuda_probe.py). Each uprobe holds one perf event file descriptor.
"""
from __future__ import annotations

import logging
import os
import resource
import time
from dataclasses import dataclass, field
from typing import Any

from gpusleuth.probes.cuda.discovery import (Resolved, SymbolCache, host_path, mapped_libraries,
                                              missing_functions)
from gpusleuth.probes.kernel.proc_info import is_alive

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LibraryAttach:
    """One library of one process: what resolved, what is missing, and the uprobes attached to it."""

    kind: str
    path: str  # as the process sees it
    resolved: list[Resolved] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    events: list[bytes] = field(default_factory=list)  # bcc's names of the perf events, to detach them
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

    def __init__(self, bpf: Any, kinds: list[str], skip: set[int], max_uprobes: int, rescan_s: float,
                 symbols: SymbolCache | None = None) -> None:
        self._bpf = bpf
        self._kinds = kinds
        self._skip = skip  # function ids not to attach (launches = "off")
        self._max = max_uprobes
        self._rescan_s = rescan_s
        self._symbols = symbols or SymbolCache()
        self.processes: dict[int, ProcessAttach] = {}
        self.refused = 0  # uprobes not attached because max_uprobes was reached
        # bcc counts uprobes against its own global quota (1000 unless BCC_PROBE_LIMIT says otherwise).
        os.environ.setdefault("BCC_PROBE_LIMIT", str(max_uprobes + 1024))
        raise_fd_limit(max_uprobes + 4096)

    @property
    def num_uprobes(self) -> int:
        return sum(len(lib.events) for p in self.processes.values() for lib in p.libraries.values())

    def sync(self, tgids: frozenset[int]) -> None:
        """Attach to watched processes' newly mapped libraries; detach from processes gone or no longer watched."""
        now = time.monotonic()
        for pid in [p for p in self.processes if p not in tgids or not is_alive(p)]:
            self.detach(pid)
        for pid in tgids:
            proc = self.processes.setdefault(pid, ProcessAttach(pid))
            if now >= proc.next_scan:
                proc.next_scan = now + self._rescan_s
                self._scan(proc)

    def _scan(self, proc: ProcessAttach) -> None:
        for kind, path in mapped_libraries(proc.pid).items():
            if kind in self._kinds and kind not in proc.libraries:
                proc.libraries[kind] = self._attach_library(proc.pid, kind, path)

    def _attach_library(self, pid: int, kind: str, path: str) -> LibraryAttach:
        lib = LibraryAttach(kind, path)
        try:
            lib.resolved = self._symbols.resolve(host_path(pid, path), kind)
        except Exception as exc:  # OSError from stat; bcc raises a bare Exception when it cannot read the ELF
            lib.error = f"cannot read symbols of {path}: {exc}"
            return lib
        lib.missing = missing_functions(kind, lib.resolved)
        for r in lib.resolved:
            if r.fn_id in self._skip:
                continue
            if self.num_uprobes + 2 > self._max:
                self.refused += 1
                continue
            try:
                lib.events += self._attach_one(pid, path, r)
            except Exception as exc:  # bcc: bare Exception on attach failure (process gone, quota, EMFILE)
                lib.error = f"attaching {r.symbol}: {exc}"
                log.warning("cuda probe: pid %d: %s", pid, lib.error)
        log.info("cuda probe: pid %d %s %s: %d symbols, %d uprobes", pid, kind, path, len(lib.resolved),
                 len(lib.events))
        return lib

    def _attach_one(self, pid: int, path: str, r: Resolved) -> list[bytes]:
        before = set(self._bpf.uprobe_fds)
        self._bpf.attach_uprobe(name=path, addr=r.address, fn_name=f"e_{r.fn_id}", pid=pid)
        if r.fn.family.has_return:
            self._bpf.attach_uretprobe(name=path, addr=r.address, fn_name=f"r_{r.fn_id}", pid=pid)
        return sorted(set(self._bpf.uprobe_fds) - before)

    def detach(self, pid: int) -> None:
        """Close every uprobe of `pid` (a process that exited leaves its perf events to close)."""
        proc = self.processes.pop(pid, None)
        if proc is None:
            return
        for lib in proc.libraries.values():
            for ev in lib.events:
                try:
                    self._bpf.detach_uprobe_event(ev)
                except Exception as exc:  # bcc: bare Exception; keep detaching the rest
                    log.debug("cuda probe: detaching %r: %s", ev, exc)
            lib.events = []

    def detach_all(self) -> None:
        for pid in list(self.processes):
            self.detach(pid)
