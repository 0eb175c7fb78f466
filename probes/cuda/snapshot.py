"""What the cuda probe publishes each poll (`store.snapshot("cuda")`).

Counts, bytes and histograms are cumulative since the probe first saw the process; a histogram slot s holds
[2^(s-1), 2^s) ns (probes/bpf/log2_hist.py). Processes are keyed by pid, threads by tid, TP groups by their key.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gpusleuth.probes.bpf.log2_hist import Log2Counts


@dataclass(slots=True)
class CallStats:
    """Calls of one kind: how many, bytes moved (or allocated, or freed), failed calls, call durations."""

    count: int = 0
    bytes: int = 0
    failures: int = 0
    duration: Log2Counts = field(default_factory=Log2Counts)


@dataclass(slots=True)
class CudaLibrary:
    """One library the process maps: which of the probe's symbols it exports (attached) and which it lacks."""

    path: str = ""
    symbols: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    uprobes: int = 0
    error: str = ""


@dataclass(slots=True)
class HostStep:
    """The host time of one thread between two syncs: it launched, then waited for the GPU.

    GPU-bound when the wait is at least probes.cuda.gpu_bound_share of the step (the GPU was the one still busy),
    else CPU-bound. `idle_gap_ns` is the time from the previous sync's return to the first launch (-1 unknown):
    the GPU had nothing queued by this thread then."""

    end_ns: int = 0
    host_ns: int = 0
    wait_ns: int = 0
    idle_gap_ns: int = -1
    launches: int = 0
    graph_launches: int = 0
    copy_bytes: int = 0
    bound: str = "cpu"  # "cpu" | "gpu"


@dataclass(slots=True)
class CudaThread:
    comm: str = ""
    launches: int = 0
    graph_launches: int = 0
    steps: list[HostStep] = field(default_factory=list)  # the most recent, oldest first


@dataclass(slots=True)
class CollectiveStats:
    """Collectives of one op on one communicator (NCCL) or process group (gloo) of this process."""

    library: str = ""  # "nccl" | "gloo"
    group: str = ""  # TpGroup key ('' while the communicator's init was not seen)
    rank: int = -1
    op: str = ""
    stats: CallStats = field(default_factory=CallStats)


@dataclass(slots=True)
class CudaProcess:
    comm: str = ""
    libraries: dict[str, CudaLibrary] = field(default_factory=dict)  # "driver", "runtime", "nccl", "gloo"
    api: str = ""  # "driver+runtime" or "driver only (runtime static or absent)"
    launches: int = 0
    graph_launches: int = 0
    launch_rate: float = 0.0  # kernel launches per second over the last poll
    syncs: dict[str, CallStats] = field(default_factory=dict)  # "stream", "context", "device", "event"
    copies: dict[str, CallStats] = field(default_factory=dict)  # direction: h2h h2d d2h d2d default peer
    copy_bandwidth: dict[str, float] = field(default_factory=dict)  # bytes/s of synchronous copies, by direction
    allocs: CallStats = field(default_factory=CallStats)
    frees: CallStats = field(default_factory=CallStats)
    live_alloc_bytes: int = 0  # allocated minus freed since the probe attached
    collectives: list[CollectiveStats] = field(default_factory=list)
    groups: CallStats = field(default_factory=CallStats)  # ncclGroupStart/End
    host_steps: dict[str, int] = field(default_factory=dict)  # "cpu" / "gpu" -> count
    sync_wait_ns: int = 0
    host_step_ns: int = 0  # total host time of the steps (sync wait share = sync_wait_ns / host_step_ns)
    idle_gaps: Log2Counts = field(default_factory=Log2Counts)
    threads: dict[int, CudaThread] = field(default_factory=dict)


@dataclass(slots=True)
class TpRank:
    pid: int = 0
    last: int = 0  # collectives this rank entered last (it was the straggler)
    caused_wait_ns: int = 0  # the other ranks' waits for it in those
    waited_ns: int = 0  # its own waits for the last rank


@dataclass(slots=True)
class TpGroup:
    """One communicator across its ranks (NCCL, by unique id) or one gloo process group of one job."""

    library: str = ""
    size: int = 0
    matched: int = 0  # collectives seen on every rank
    unmatched: int = 0  # seen on some ranks only (a rank not watched, or attached later)
    ranks: dict[int, TpRank] = field(default_factory=dict)  # rank -> figures
    last_straggler: int = -1  # rank of the most recent collective's straggler


@dataclass(slots=True)
class CudaSnapshot:
    t_ns: int = 0
    interval_s: float = 0.0
    processes: dict[int, CudaProcess] = field(default_factory=dict)
    groups: dict[str, TpGroup] = field(default_factory=dict)
    uprobes: int = 0  # attached now, all processes
    uprobes_refused: int = 0  # not attached: probes.cuda.max_uprobes reached
    launch_tracing_until_ns: int = 0  # per-launch events until then (0 = off)
    stragglers_total: int = 0  # tp.straggler events (collectives late by >= straggler_min_ms)
    lost_keys: int = 0
    lost_events: int = 0
    lost_threads: int = 0
