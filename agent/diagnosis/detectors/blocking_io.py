"""blocking_io: the thread doing the request's work blocked in I/O: uninterruptible (D) waits inside a syscall,
or slow syscalls that are not waits for work (fsync, write, read of a file, ...).

Evidence: `offcpu` D-state events of the path's threads that are not page faults (those are memory_reclaim's),
and `slow_syscall` events of non-wait syscalls on them. The culprit is the blocked thread with the syscall.
"""
from __future__ import annotations

from collections import Counter

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding
from gpusleuth.agent.diagnosis.detectors.common import claims, ms, path_events, spans
from gpusleuth.agent.diagnosis.detectors.faults import is_fault_wait, syscall_around
from gpusleuth.agent.diagnosis.intervals import total
from gpusleuth.probes.kernel.syscall_table import WAIT_SYSCALLS

CAUSE = "blocking_io"


def detect(ctx: Context) -> list[Finding]:
    d_eng, d_srv = path_events(ctx, "offcpu", lambda e: str(e.attrs.get("state")) == "D"
                               and not is_fault_wait(ctx, e))
    s_eng, s_srv = path_events(ctx, "slow_syscall", lambda e: e.attrs.get("syscall") not in WAIT_SYSCALLS)
    every = d_eng + d_srv + s_eng + s_srv
    if not every:
        return []
    got = claims(ctx, spans(d_eng + s_eng), spans(d_srv + s_srv))
    calls: Counter = Counter()
    for e in s_eng + s_srv:
        calls[str(e.attrs.get("syscall"))] += e.end_ns - e.start_ns
    for e in d_eng + d_srv:
        s = syscall_around(ctx, e)
        if s is None:
            calls["(D state)"] += e.end_ns - e.start_ns
    worst = max(every, key=lambda e: e.end_ns - e.start_ns)
    syscall = calls.most_common(1)[0][0] if calls else None
    text = (f"{worst.comm} (pid {worst.pid}, tid {worst.tid}) was blocked in I/O for {ms(total(spans(every)))}"
            + (f": {', '.join(f'{c} {ms(n)}' for c, n in calls.most_common(3))}" if calls else "")
            + f" (longest {ms(worst.end_ns - worst.start_ns)})")
    wakers = sorted({(int(e.attrs.get("waker_pid") or 0), str(e.attrs.get("waker_comm") or ""))
                     for e in d_eng + d_srv} - {(0, "")})
    if wakers:
        text += "; completed by " + ", ".join(f"{c} (pid {p})" for p, c in wakers[:2])
    return [Finding(CAUSE, who(worst.pid, worst.comm, worst.tid, syscall=syscall), text, intervals=got,
                    figures={"syscalls": {c: round(n / 1e6, 3) for c, n in calls.items()},
                             "d_waits": len(d_eng + d_srv)})]
