"""The cuda probe's records as store Events (kinds: cuda.sync, cuda.alloc_failure, nccl.comm_init, tp.straggler,
cuda.launch). Attribute names are what the diagnosis and the README's Events list use."""
from __future__ import annotations

from gpusleuth.probes.cuda.decode import AllocFailure, CommInit, Launch, SyncCall
from gpusleuth.probes.cuda.snapshot import HostStep
from gpusleuth.probes.cuda.straggler import Straggler
from gpusleuth.probes.records import Event

SOURCE = "cuda"


def sync_event(call: SyncCall, step: HostStep | None, comm: str) -> Event:
    """A host sync; with the host step it closed (host_ns, idle_gap_ns -1 unknown, bound cpu/gpu) when known."""
    attrs = {"fn": call.fn.name, "call": call.fn.call, "wait_ns": call.wait_ns, "launches": call.launches,
             "graph_launches": call.graphs, "copy_bytes": call.copy_bytes, "ret": call.ret}
    if step is not None:
        attrs.update(host_ns=step.host_ns, idle_gap_ns=step.idle_gap_ns, bound=step.bound)
    return Event("cuda.sync", SOURCE, call.start_ns, call.end_ns, call.pid, call.tid, comm, attrs)


def alloc_failure_event(f: AllocFailure, comm: str) -> Event:
    return Event("cuda.alloc_failure", SOURCE, f.start_ns, f.start_ns + f.dur_ns, f.pid, f.tid, comm,
                 {"fn": f.fn.name, "bytes": f.bytes, "error": f.ret})


def comm_init_event(init: CommInit, comm: str) -> Event:
    return Event("nccl.comm_init", SOURCE, init.start_ns, init.start_ns + init.dur_ns, init.pid, init.tid, comm,
                 {"rank": init.rank, "nranks": init.nranks, "unique_id": init.unique_id, "comm": hex(init.comm),
                  "ret": init.ret})


def straggler_event(s: Straggler, comm: str) -> Event:
    """A collective whose last rank entered late: the rank, its cost, and each rank's entry after the first (ms)."""
    first = s.first_ns
    return Event("tp.straggler", SOURCE, first, s.last_ns, s.pid, 0, comm,
                 {"group": s.group, "library": s.library, "op": s.op, "seq": s.seq, "rank": s.rank,
                  "spread_ms": s.spread_ns / 1e6, "wait_ms": s.cost_ns / 1e6,
                  "entries_ms": {str(r): (t - first) / 1e6 for r, (_, t) in sorted(s.entries.items())},
                  "pids": {str(r): p for r, (p, _) in sorted(s.entries.items())}})


def launch_event(launch: Launch, comm: str) -> Event:
    return Event("cuda.launch", SOURCE, launch.t_ns, launch.t_ns, launch.pid, launch.tid, comm,
                 {"fn": launch.fn.name, "function": hex(launch.function), "grid": list(launch.grid),
                  "block": list(launch.block), "shared_mem": launch.shared_mem, "stream": hex(launch.stream)})
