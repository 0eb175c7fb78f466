"""Why was this request slow? Overlap its phases with everything else the host recorded, rank by evidence.

Each candidate cause gets a score in [0, 1]: roughly the fraction of the request's slow phase that the evidence
covers (run-queue waits and slow syscalls of the engine's own threads, microbursts and retransmits, GPU throttling
and errors, KV-cache queueing). Verdicts point to the runbook that answers them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from gpusleuth import runbooks
from gpusleuth.probes.kernel.syscall_table import WAIT_SYSCALLS
from gpusleuth.probes.records import Event

# cause -> the runbook that answers it (files in runbooks/, resolved inside the installed package)
RUNBOOKS = {
    "runqueue": "cpu-runqueue-delay",
    "syscall": "slow-syscall",
    "network": "network-microburst",
    "gpu_throttle": "gpu-throttling",
    "gpu_error": "gpu-xid",
    "queueing": "kv-cache-queueing",
    "tp_straggler": "tp-straggler",
}


@dataclass(slots=True)
class Verdict:
    cause: str
    score: float
    evidence: str
    runbook: str

    def to_dict(self) -> dict[str, Any]:
        return {"cause": self.cause, "score": round(self.score, 3), "evidence": self.evidence,
                "runbook": str(runbooks.path(self.runbook))}


def _overlap_ns(e: Event, lo: int, hi: int) -> int:
    return max(0, min(e.end_ns, hi) - max(e.start_ns, lo))


def _covered(events: Iterable[Event], lo: int, hi: int) -> int:
    """Nanoseconds of [lo, hi] covered by the union of events (overlapping events are not double counted)."""
    spans = sorted((max(e.start_ns, lo), min(e.end_ns, hi)) for e in events if _overlap_ns(e, lo, hi) > 0)
    total, cur_lo, cur_hi = 0, None, None
    for a, b in spans:
        if cur_hi is None or a > cur_hi:
            total += (cur_hi - cur_lo) if cur_hi is not None else 0
            cur_lo, cur_hi = a, b
        else:
            cur_hi = max(cur_hi, b)
    return total + ((cur_hi - cur_lo) if cur_hi is not None else 0)


def slowest_phase(phases: dict[str, tuple[int, int]]) -> tuple[str, int, int]:
    name = max(phases, key=lambda p: phases[p][1] - phases[p][0])
    return name, *phases[name]


def rank_causes(request: dict[str, Any], phases: dict[str, tuple[int, int]], events: list[Event]) -> list[Verdict]:
    """Verdicts for one request, best first. `events` are everything that overlapped its window."""
    if not phases:
        return []
    phase, lo, hi = slowest_phase(phases)
    span = max(1, hi - lo)
    pid = request.get("pid")
    verdicts: list[Verdict] = []

    def add(cause: str, matched: list[Event], describe) -> None:
        if matched:
            covered = _covered(matched, lo, hi)
            if covered > 0 or cause in ("network", "gpu_error"):
                score = max(covered / span, 0.05 if cause in ("network", "gpu_error") else 0.0)
                verdicts.append(Verdict(cause, min(1.0, score), describe(matched, covered), RUNBOOKS[cause]))

    runq = [e for e in events if e.kind == "runq_delay" and e.pid == pid]
    add("runqueue", runq, lambda m, c: f"{len(m)} run-queue waits of engine threads covered {c / 1e6:.1f} ms of "
        f"the {phase} phase ({span / 1e6:.1f} ms); longest {max(e.duration_ns for e in m) / 1e6:.1f} ms behind "
        f"{m[0].attrs.get('prev_comm', '?')}")
    sysc = [e for e in events if e.kind == "slow_syscall" and e.pid == pid
            and e.attrs.get("syscall") not in WAIT_SYSCALLS]
    add("syscall", sysc, lambda m, c: f"{len(m)} slow syscalls on engine threads "
        f"({', '.join(sorted({str(e.attrs.get('syscall')) for e in m})[:3])}) covered {c / 1e6:.1f} ms")
    net = [e for e in events if e.kind.startswith("net.")]
    add("network", net, lambda m, c: f"{len(m)} network events ({', '.join(sorted({e.kind for e in m}))}) "
        f"during the {phase} phase")
    throttle = [e for e in events if e.kind == "gpu_throttle"]
    add("gpu_throttle", throttle, lambda m, c: f"GPU throttled ({', '.join(sorted({str(r) for e in m for r in e.attrs.get('reasons', [])}))}) "
        f"for {c / 1e6:.1f} ms of the {phase} phase")
    gpu_err = [e for e in events if e.kind.startswith("gpu_") and e.kind != "gpu_throttle"]
    add("gpu_error", gpu_err, lambda m, c: f"{len(m)} GPU error events ({', '.join(sorted({e.kind for e in m}))})")
    e2e_ns = max(1, max(b for _, b in phases.values()) - min(a for a, _ in phases.values()))
    if phase == "queued":
        verdicts.append(Verdict("queueing", span / e2e_ns, f"the request waited {span / 1e6:.1f} ms before it "
                                "was scheduled (batch full or KV cache exhausted)", RUNBOOKS["queueing"]))
    return sorted(verdicts, key=lambda v: v.score, reverse=True)
