"""User space of lifecycle.h: the forks, execs and exits of watched processes that the kernel noted since the last
poll, kept as the probe's inherited children and fed to its comm cache.

A child of a watched process joins the kernel's `watched` map at fork (in the kernel, so its first syscall counts);
user space learns of it here and keeps it in every later push of the watch set until it exits. An exec updates the
process's comm at once (snapshots and series carry the new name); an exit leaves its last comm, so a process gone
before its first poll is still named.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from gpusleuth.probes.bpf import maps as bpf_maps
from gpusleuth.probes.kernel.proc_info import CommCache, is_alive

PROC_FORK, PROC_EXEC, PROC_EXIT = 1, 2, 4


@dataclass(slots=True, frozen=True)
class ProcChange:
    tgid: int
    kinds: int  # PROC_* bits
    ppid: int
    comm: str
    old_comm: str  # the name before an exec ('' if unknown)


class Lifecycle:
    """Drains `proc_events`; `inherited` holds the live children that joined the watch in the kernel."""

    def __init__(self, comms: CommCache) -> None:
        self.comms = comms
        self.inherited: dict[int, int] = {}  # child tgid -> watched parent
        self.forks = self.execs = self.exits = 0
        self.on_exec: Callable[[ProcChange], None] | None = None  # the agent re-evaluates its watch rules

    def drain(self, table: Any) -> list[ProcChange]:
        changes = []
        for key, e in bpf_maps.drain(table):
            tgid = getattr(key, "value", key)
            comm = bpf_maps.comm_str(bytes(e.comm))
            old = self.comms.peek(tgid)
            if e.kinds & PROC_FORK:
                self.forks += 1
                if not e.kinds & PROC_EXIT:
                    self.inherited[tgid] = e.ppid
            if e.kinds & PROC_EXEC:
                self.execs += 1
            if e.kinds & PROC_EXIT:
                self.exits += 1
                self.inherited.pop(tgid, None)
            if comm:
                self.comms.put(tgid, comm)
            changes.append(ProcChange(tgid, e.kinds, e.ppid, comm, old if old != comm else ""))
        for change in changes:
            if change.kinds & PROC_EXEC and self.on_exec is not None:
                self.on_exec(change)
        return changes

    def live_children(self) -> frozenset[int]:
        """The inherited children still alive (a missed exit is caught here)."""
        for tgid in [t for t in self.inherited if not is_alive(t)]:
            del self.inherited[tgid]
        return frozenset(self.inherited)
