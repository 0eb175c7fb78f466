"""Tensor-parallel stragglers from the collectives every rank enters: the rank that entered a collective last held
the others back, and their waits (its entry time minus theirs) are its cost.

The same collective is recognised on every rank by its group and sequence number:
- NCCL: the group is the communicator's unique id (read at ncclCommInitRank*, the same on every rank) and the
  sequence is counted per communicator from its init, so the probe must have been attached at init (a communicator
  made earlier is counted as unmatched);
- gloo: the sequence is c10d::ProcessGroupGloo's tag (its collective counter, the same on every rank whenever the
  probe attached), rank and size come from the gloo context; the group is the job (MASTER_ADDR:MASTER_PORT from
  the environment, which torchrun and most launchers set, else the launcher: the parent of the eldest ancestor
  that is itself a member, i.e. rank 0's parent for ranks spawned by rank 0 with torch.multiprocessing, and the
  common parent of ranks started side by side), the size, and the process group's order of first use in the
  process among groups of that size. Two gloo jobs started side by side by one parent without MASTER_ADDR/PORT in
  their environment are therefore taken for one (their collectives would be matched with each other).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gpusleuth.probes.cuda.decode import CollectiveCall, CommInit
from gpusleuth.probes.cuda.discovery import job_environment, parent_pid
from gpusleuth.probes.cuda.snapshot import TpGroup, TpRank

PENDING_S = 30.0  # a collective not seen on every rank within this long is given up (unmatched)
MAX_PENDING = 200_000


@dataclass(slots=True, frozen=True)
class Straggler:
    """One collective matched across all ranks of its group."""

    group: str
    library: str
    op: str
    seq: int
    entries: dict[int, tuple[int, int]]  # rank -> (pid, entry ns)
    rank: int  # the last to enter
    pid: int

    @property
    def first_ns(self) -> int:
        return min(t for _, t in self.entries.values())

    @property
    def last_ns(self) -> int:
        return self.entries[self.rank][1]

    @property
    def spread_ns(self) -> int:
        return self.last_ns - self.first_ns

    @property
    def cost_ns(self) -> int:
        """The other ranks' total wait for the last one."""
        return sum(self.last_ns - t for _, t in self.entries.values())


@dataclass(slots=True)
class _Pending:
    seen_ns: int
    size: int
    op: str
    library: str
    entries: dict[int, tuple[int, int]] = field(default_factory=dict)


class TpMatcher:
    """Matches collectives across processes; keeps per-group figures for the snapshot."""

    def __init__(self) -> None:
        self.groups: dict[str, TpGroup] = {}
        self.members: set[int] = set()  # processes that map NCCL or gloo (set by the probe before each batch)
        self._comms: dict[tuple[int, int], CommInit] = {}
        self._pgs: dict[tuple[int, int], list[int]] = {}  # (pid, size) -> gloo process groups in order of use
        self._pg_ranks: dict[tuple[int, int], int] = {}  # (pid, process group) -> gloo rank
        self._jobs: dict[int, str] = {}
        self._pending: dict[tuple[str, int], _Pending] = {}

    def add_init(self, init: CommInit) -> None:
        if init.ret == 0 and init.comm:
            self._comms[(init.pid, init.comm)] = init

    def group_of(self, call: CollectiveCall) -> tuple[str, int, int] | None:
        """(group key, rank, size) of a call, or None when its communicator's init was not seen."""
        if call.library == "nccl":
            init = self._comms.get((call.pid, call.handle))
            return None if init is None else (f"nccl:{init.unique_id}", init.rank, init.nranks)
        if call.rank < 0 or call.size < 2:
            return None
        pgs = self._pgs.setdefault((call.pid, call.size), [])
        if call.handle not in pgs:
            pgs.append(call.handle)
            self._pg_ranks[(call.pid, call.handle)] = call.rank
        return f"gloo:{self._job(call.pid)}:{call.size}:{pgs.index(call.handle)}", call.rank, call.size

    def groups_of(self) -> dict[tuple[int, str, int], tuple[str, int]]:
        """(pid, library, handle) -> (group key, rank) as far as known; for per-process collective stats."""
        out = {(pid, "nccl", comm): (f"nccl:{i.unique_id}", i.rank) for (pid, comm), i in self._comms.items()}
        for (pid, size), pgs in self._pgs.items():
            for n, pg in enumerate(pgs):
                out[(pid, "gloo", pg)] = (f"gloo:{self._job(pid)}:{size}:{n}", self._pg_ranks.get((pid, pg), -1))
        return out

    def _job(self, pid: int) -> str:
        if pid not in self._jobs:
            env = job_environment(pid)
            if env:
                self._jobs[pid] = f"env {env}"
            else:  # the launcher: the parent of the eldest ancestor that is itself a member
                eldest, parent = pid, parent_pid(pid)
                while parent in self.members and parent != eldest:
                    eldest, parent = parent, parent_pid(parent)
                self._jobs[pid] = f"launcher {parent}"
        return self._jobs[pid]

    def add(self, call: CollectiveCall, now_ns: int) -> Straggler | None:
        """Record one rank's entry; the Straggler once every rank of the group has entered this collective."""
        g = None if call.is_p2p else self.group_of(call)
        if g is None:
            return None
        key, rank, size = g
        group = self.groups.setdefault(key, TpGroup(library=call.library, size=size))
        group.ranks.setdefault(rank, TpRank(pid=call.pid)).pid = call.pid
        pending = self._pending.setdefault((key, call.seq), _Pending(now_ns, size, call.fn.call, call.library))
        pending.entries[rank] = (call.pid, call.start_ns)
        if len(pending.entries) < size:
            if len(self._pending) > MAX_PENDING:
                self.expire(now_ns, force_oldest=True)
            return None
        del self._pending[(key, call.seq)]
        last = max(pending.entries, key=lambda r: pending.entries[r][1])
        s = Straggler(key, call.library, pending.op, call.seq, pending.entries, last, pending.entries[last][0])
        self._count(group, s)
        return s

    @staticmethod
    def _count(group: TpGroup, s: Straggler) -> None:
        group.matched += 1
        group.last_straggler = s.rank
        late = group.ranks[s.rank]
        late.last += 1
        late.caused_wait_ns += s.cost_ns
        for rank, (_, t) in s.entries.items():
            group.ranks[rank].waited_ns += s.last_ns - t

    def expire(self, now_ns: int, force_oldest: bool = False) -> None:
        """Give up collectives not complete within PENDING_S (or the oldest half, when too many are pending)."""
        horizon = now_ns - int(PENDING_S * 1e9)
        items = sorted(self._pending.items(), key=lambda kv: kv[1].seen_ns)
        drop = items[: len(items) // 2] if force_oldest else [kv for kv in items if kv[1].seen_ns < horizon]
        for (key, seq), _ in drop:
            del self._pending[(key, seq)]
            if key in self.groups:
                self.groups[key].unmatched += 1

    def drop_pending(self, pid: int) -> None:
        """A process left: its entries will never be matched (a new rank may reuse its group and sequence)."""
        for key in [k for k, p in self._pending.items() if any(e[0] == pid for e in p.entries.values())]:
            del self._pending[key]
            if key[0] in self.groups:
                self.groups[key[0]].unmatched += 1

    def forget(self, pid: int) -> None:
        """A process is gone: drop what keys its calls (its groups stay, with their figures)."""
        self._jobs.pop(pid, None)
        self._comms = {k: v for k, v in self._comms.items() if k[0] != pid}
        self._pgs = {k: v for k, v in self._pgs.items() if k[0] != pid}
        self._pg_ranks = {k: v for k, v in self._pg_ranks.items() if k[0] != pid}
