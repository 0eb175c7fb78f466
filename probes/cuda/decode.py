"""The cuda probe's kernel records (cuda.c `struct event_t`) as typed records, one type per kind of event."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpusleuth.probes.cuda.symbols import ALL_FUNCTIONS, Family, Fn

EV_SYNC, EV_COLL, EV_ALLOC_FAIL, EV_COMM_INIT, EV_LAUNCH, EV_GLOO = range(1, 7)
_DIM_MASK = (1 << 21) - 1


def _signed32(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


@dataclass(slots=True, frozen=True)
class SyncCall:
    """A host thread blocked on the GPU, and the host step it ends: what the thread did since its previous sync."""

    pid: int
    tid: int
    fn: Fn
    start_ns: int
    wait_ns: int
    handle: int  # the stream or event waited on (0 for a context/device sync)
    launches: int  # kernel launches since the previous sync of this thread
    graphs: int  # graph launches since then
    copy_bytes: int
    prev_end_ns: int  # when the previous sync of this thread returned (0: none seen)
    first_launch_ns: int  # the first launch after it (0: none)
    ret: int

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.wait_ns

    @property
    def host_ns(self) -> int | None:
        """The whole host step: from the previous sync's return to this one's (None for a thread's first)."""
        return self.end_ns - self.prev_end_ns if self.prev_end_ns else None

    @property
    def idle_gap_ns(self) -> int | None:
        """GPU idle at the start of the step: nothing was queued from the previous sync's return until the first
        launch (None when unknown)."""
        if not self.prev_end_ns or not self.first_launch_ns or self.first_launch_ns < self.prev_end_ns:
            return None
        return self.first_launch_ns - self.prev_end_ns


@dataclass(slots=True, frozen=True)
class CollectiveCall:
    """A collective or p2p call entered by one rank: NCCL (seq counted per communicator since its init) or gloo
    (seq = the ProcessGroup's tag; rank and size from the gloo context)."""

    pid: int
    tid: int
    fn: Fn
    start_ns: int
    dur_ns: int
    handle: int  # ncclComm_t, or the c10d::ProcessGroupGloo object
    bytes: int
    seq: int
    peer: int  # ncclSend/Recv
    rank: int  # -1 where the call itself does not say (NCCL: from its communicator's init)
    size: int

    @property
    def library(self) -> str:
        return self.fn.lib

    @property
    def is_p2p(self) -> bool:
        """ncclSend/Recv and gloo send/recv: not matched across ranks (each rank makes its own)."""
        return self.fn.call in ("send", "recv")


@dataclass(slots=True, frozen=True)
class CommInit:
    """ncclCommInitRank*: a communicator, this process's rank in it, and the first 16 bytes of its unique id
    (the same on every rank: it names the group)."""

    pid: int
    tid: int
    fn: Fn
    start_ns: int
    dur_ns: int
    comm: int
    rank: int
    nranks: int
    unique_id: str
    ret: int


@dataclass(slots=True, frozen=True)
class AllocFailure:
    pid: int
    tid: int
    fn: Fn
    start_ns: int
    dur_ns: int
    bytes: int
    ret: int


@dataclass(slots=True, frozen=True)
class Launch:
    """One kernel or graph launch (only while launch tracing is on)."""

    pid: int
    tid: int
    fn: Fn
    t_ns: int
    function: int  # CUfunction (0 for a graph launch)
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    stream: int


Record = SyncCall | CollectiveCall | CommInit | AllocFailure | Launch


def gloo_rank_size(first: int, second: int) -> tuple[int, int]:
    """(rank, size) from the first 16 bytes of a gloo::Context (two little-endian u64), or (-1, 0) if they do not
    look like one. Upstream gloo declares a virtual destructor, so `rank, size` follow the vtable pointer; the gloo
    inside torch 2.13's CPU wheel has them first (seen on the CPU box: the object's words were [rank, size, base]).
    A vtable pointer is never a small number, so the two readings cannot be confused."""
    words = [first & 0xffffffff, first >> 32, second & 0xffffffff, second >> 32]
    for rank, size in ((words[0], words[1]), (words[2], words[3])):
        if 0 <= rank < size <= 1 << 16:
            return rank, size
    return -1, 0


def _dims(packed: int) -> tuple[int, int, int]:
    return packed & _DIM_MASK, (packed >> 21) & _DIM_MASK, (packed >> 42) & _DIM_MASK


def decode(raw: Any) -> Record | None:
    """One kernel record as its typed record (None for an unknown kind: a loader and C text out of step)."""
    fn = ALL_FUNCTIONS[raw.fn]
    pid, tid, kind = raw.tgid, raw.tid, raw.kind
    if kind == EV_SYNC:
        return SyncCall(pid, tid, fn, raw.ts, raw.dur, raw.a0, raw.a1, raw.a2, raw.a3, raw.a4, raw.a5,
                        _signed32(raw.ret & 0xffffffff))
    if kind == EV_COLL:
        return CollectiveCall(pid, tid, fn, raw.ts, raw.dur, raw.a0, raw.a1, raw.a2, _signed32(raw.a3 & 0xffffffff),
                              -1, 0)
    if kind == EV_GLOO:
        rank, size = gloo_rank_size(raw.a2, raw.a3)
        return CollectiveCall(pid, tid, fn, raw.ts, raw.dur, raw.a0, 0, raw.a1, -1, rank, size)
    if kind == EV_COMM_INIT:
        uid = raw.a3.to_bytes(8, "little").hex() + raw.a4.to_bytes(8, "little").hex()
        return CommInit(pid, tid, fn, raw.ts, raw.dur, raw.a0, _signed32(raw.a1 & 0xffffffff),
                        _signed32(raw.a2 & 0xffffffff), uid, _signed32(raw.ret & 0xffffffff))
    if kind == EV_ALLOC_FAIL:
        return AllocFailure(pid, tid, fn, raw.ts, raw.dur, raw.a0, _signed32(raw.ret & 0xffffffff))
    if kind == EV_LAUNCH:
        is_graph = fn.family is Family.GRAPH
        return Launch(pid, tid, fn, raw.ts, 0 if is_graph else raw.a0, _dims(raw.a1), _dims(raw.a2), raw.a3, raw.a4)
    return None
