"""Feeding the baselines: each step, once the kernel evidence of its time has arrived, is judged clean or not and
offered to its engine's step baseline; the gap after a clean step teaches the gap baseline; finished requests teach
the part baselines (arrival, queue, stream, usual interference); the GPU's SM clock during clean steps teaches the
clock baseline.
"""
from __future__ import annotations

from gpusleuth.agent.diagnosis.baseline import EngineBaseline
from gpusleuth.agent.diagnosis.budget import Budget
from gpusleuth.agent.diagnosis.engines import EngineTimeline
from gpusleuth.agent.diagnosis.evidence import EvidenceIndex, SampleIndex
from gpusleuth.agent.diagnosis.spans import Step
from gpusleuth.probes.kernel.syscall_table import WAIT_SYSCALLS

DIRTY_KINDS = ("runq_delay", "direct_reclaim")
SLEEP_SLACK_NS = 1_000_000  # a step that sleeps this much more than its shape usually does is not clean
CLOCK_SERIES = "gpu.sm_clock_mhz"
PROC_SERIES = "gpu.process.sm_util_pct"
GPU_SLACK_NS = 3_000_000_000  # per-process samples come on the GPU probe's detail interval
FOREIGN_PCT = 5.0


def step_evidence(ev: EvidenceIndex, eng: EngineTimeline, s: Step) -> tuple[bool, int]:
    """(is the step free of trouble on its thread, ns its thread slept inside it)."""
    pid = eng.rank_pids.get(s.rank, s.pid)
    lo, hi = s.start_ns, s.end_ns

    def mine(kind: str):
        return [e for e in ev.events(kind, lo, hi, pid) if not s.tid or e.tid == s.tid]
    if any(mine(k) for k in DIRTY_KINDS) or eng.gcs_within(lo, hi):
        return False, 0
    if any(e.attrs.get("syscall") not in WAIT_SYSCALLS for e in mine("slow_syscall")):
        return False, 0
    sleep = 0
    for e in mine("offcpu"):
        if str(e.attrs.get("state")) != "S":
            return False, 0
        sleep += max(0, min(e.end_ns, hi) - max(e.start_ns, lo))
    return True, sleep


def shares_gpu(samples: SampleIndex, gpu: int | None, pids: set[int], s: Step) -> bool:
    """Another process used the step's GPU around it (NVML per-process samples)."""
    if gpu is None:
        return False
    got = samples.series(PROC_SERIES, s.start_ns - GPU_SLACK_NS, s.end_ns, gpu=str(gpu))
    return any(int(labels.get("pid", 0)) not in pids and max(v for _, v in points) >= FOREIGN_PCT
               for labels, points in got)


def learn_step(base: EngineBaseline, ev: EvidenceIndex, eng: EngineTimeline, s: Step,
               is_shared: bool = False) -> bool:
    """Judge a step whose evidence is in and offer it to the baseline; True when it was clean (a step on a GPU
    another process used, `is_shared`, is not)."""
    is_clean, sleep = step_evidence(ev, eng, s)
    is_clean = is_clean and not is_shared
    sb = base.rank(s.rank)
    if is_clean and sb.is_ready:
        usual = sb.expected(s.num_decode, s.num_prefill_tokens).sleep_ns
        is_clean = sleep <= usual + SLEEP_SLACK_NS
    sb.observe(s, sleep, is_clean)
    return is_clean


def learn_gpu(base: EngineBaseline, s: Step, gpu_ms: float) -> None:
    """A step's own GPU time arrived (in a later step's span)."""
    base.rank(s.rank).observe_gpu(s, gpu_ms)


def learn_clock(base: EngineBaseline, samples: SampleIndex, gpu: int | None, s: Step) -> None:
    if gpu is None:
        return
    for _, points in samples.series(CLOCK_SERIES, s.start_ns, s.end_ns + 1_000_000_000, gpu=str(gpu)):
        for _, v in points[:1]:
            base.sm_clock_mhz.observe(v)


def learn_gap(base: EngineBaseline, eng: EngineTimeline, prev: Step, s: Step) -> None:
    """The time between two consecutive rank-0 steps with no idle wait between them (the loop's own overhead,
    and the engine's other threads taking the GIL or the CPU between steps)."""
    if s.start_ns >= prev.end_ns and not eng.idle_within(prev.end_ns, s.start_ns):
        base.part("gap").observe(s.start_ns - prev.end_ns)


def learn_request(base: EngineBaseline, b: Budget) -> None:
    """A finished request's arrival, queue and stream times, and the interference its decode steps saw. Every
    request teaches them (a low quantile of many is what is normal; a short fault moves it little)."""
    for name in ("arrival", "queue", "stream"):
        part = b.parts.get(name)
        if part is not None:
            base.part(name).observe(part.actual_ns)
    part = b.parts.get("decode")
    if part is not None and part.own:
        base.part("interference").observe(part.interference_ns / len(part.own))
