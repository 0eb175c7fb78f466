"""softirq: interrupt work (softirq/hardirq) took the CPU the step thread was running on. It runs in no task, so
the run queue names nobody; the thread's steps just take longer.

Evidence: `softirq` events (a CPU spent >= 20 % of a 10 ms window in softirq/hardirq; `ns`, `vector`) on the CPU
the step thread ran on (its run-queue waits say where it ran, and the live diagnosis samples the hot threads'
CPU as `diag.thread_cpu`). The claimed time is the interrupt time inside the request's steps. Network receive work
(NET_RX) is traffic's: the culprit is then the heaviest flow of the microbursts meanwhile (its sender's pid and
comm, the interface), else the CPU and vector.
"""
from __future__ import annotations

from collections import Counter

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding
from gpusleuth.agent.diagnosis.detectors.common import ms
from gpusleuth.agent.diagnosis.intervals import clip

CAUSE = "softirq"
CPU_SERIES = "diag.thread_cpu"


def thread_cpus(ctx: Context, lo: int, hi: int) -> set[int]:
    """CPUs the step thread ran on around [lo, hi]."""
    tids = ctx.step_tids()
    cpus = {int(e.attrs["cpu"]) for e in ctx.on_step_thread("runq_delay") if e.attrs.get("cpu") is not None}
    for tid in tids:
        for _, points in ctx.samples.series(CPU_SERIES, lo - 1_000_000_000, hi, tid=str(tid)):
            cpus.update(int(v) for _, v in points)
        for _, _, v in ctx.samples.last_before(CPU_SERIES, lo, tid=str(tid)):
            cpus.add(int(v))
    return cpus


def detect(ctx: Context) -> list[Finding]:
    lo, hi = ctx.window()
    irqs = ctx.events("softirq", lo, hi)
    if not irqs:
        return []
    cpus = thread_cpus(ctx, lo, hi)
    irqs = [e for e in irqs if int(e.attrs.get("cpu", -1)) in cpus]
    if not irqs:
        return []
    amounts: dict[str, float] = {}
    vectors: Counter = Counter()
    for part in ctx.engine_parts():
        for a, b in ctx.busy(part):
            for e in irqs:
                frac = clip(e.start_ns, e.end_ns, a, b) / max(1, e.end_ns - e.start_ns)
                if frac > 0:
                    ns = frac * float(e.attrs.get("ns") or 0)
                    amounts[part.name] = amounts.get(part.name, 0.0) + ns
                    vectors[str(e.attrs.get("vector") or "?")] += ns
    if not amounts:
        return []
    cpu = int(irqs[0].attrs["cpu"])
    vector = vectors.most_common(1)[0][0]
    text = (f"CPU {cpu}, where {ctx.engine.comm or 'the engine'}'s step thread ran, spent "
            f"{ms(sum(amounts.values()))} in interrupt work during the request's steps (mostly {vector}: "
            + ", ".join(f"{v} {ms(n)}" for v, n in vectors.most_common(3)) + ")")
    culprit = who(0, f"softirq {vector}", cpu=cpu, vector=vector)
    if vector in ("NET_RX", "NET_TX"):
        flow = _top_flow(ctx, lo, hi)
        if flow is not None:
            culprit = who(flow[0], flow[1], cpu=cpu, vector=vector, interface=flow[2])
            text += f"; the heaviest traffic meanwhile: {flow[1]} (pid {flow[0]}) on {flow[2]}, {flow[3] / 1e6:.1f} MB"
    return [Finding(CAUSE, culprit, text, amounts=amounts,
                    figures={"cpu": cpu, "vectors": {v: round(n / 1e6, 3) for v, n in vectors.items()}})]


def _top_flow(ctx: Context, lo: int, hi: int) -> tuple[int, str, str, int] | None:
    """(pid, comm, interface, bytes) of the process sending the most bytes in microbursts over [lo, hi]."""
    pids = ctx.pids()
    sent: Counter = Counter()
    names: dict[int, tuple[str, str]] = {}
    for b in ctx.events("net.microburst", lo, hi):
        for f in b.attrs.get("top_flows") or ():
            pid = int(f.get("pid") or 0)
            if pid and pid not in pids:
                sent[pid] += int(f.get("bytes") or 0)
                names.setdefault(pid, (str(f.get("comm") or "?"), str(b.attrs.get("interface") or "?")))
    if not sent:
        return None
    pid, n = sent.most_common(1)[0]
    return pid, names[pid][0], names[pid][1], n
