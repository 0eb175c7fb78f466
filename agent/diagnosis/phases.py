"""A request's own spans among everything the host recorded: its phases, its engine's steps, the host evidence.

The engine sends one span per request phase (`request.queued`, `request.prefill`, `request.decode`, then
`request.finished`) and one per scheduler step (`engine.step`); everything else in a request's window is host
evidence. Threads parked in an idle wait (epoll_wait, futex, ...) overlap every request, so they are counted,
not shown and never blamed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from gpusleuth.probes.kernel.syscall_table import WAIT_SYSCALLS
from gpusleuth.probes.records import Event

REQUEST_PREFIX = "request."
STEP_KIND = "engine.step"


def phase_of(kind: str) -> str | None:
    """The request phase an engine span stands for ("request.prefill" -> "prefill", "engine.step" -> "step")."""
    if kind.startswith(REQUEST_PREFIX):
        return kind[len(REQUEST_PREFIX):]
    return "step" if kind == STEP_KIND else None


def is_idle_wait(e: Event) -> bool:
    """A syscall a thread makes to wait for work: long by design, never evidence of a stall."""
    return e.kind == "slow_syscall" and e.attrs.get("syscall") in WAIT_SYSCALLS


@dataclass(slots=True)
class RequestWindow:
    """What happened during one request, split by role."""

    phases: list[Event] = field(default_factory=list)  # the request's own phase spans, oldest first
    steps: list[Event] = field(default_factory=list)  # scheduler steps of its engine
    evidence: list[Event] = field(default_factory=list)  # host events that are not engine spans or idle waits
    idle_waits: int = 0

    def phase_times(self) -> dict[str, tuple[int, int]]:
        return {phase_of(e.kind): (e.start_ns, e.end_ns) for e in self.phases}


def split_window(request: dict[str, Any], events: Iterable[Event]) -> RequestWindow:
    """Sort the events overlapping `request` ({"request_id", "pid", ...}) into its phases, steps and evidence."""
    rid, pid = request.get("request_id"), request.get("pid")
    out = RequestWindow()
    for e in events:
        phase = phase_of(e.kind)
        if phase is None:
            if is_idle_wait(e):
                out.idle_waits += 1
            else:
                out.evidence.append(e)
        elif phase == "step":
            if e.pid == pid:
                out.steps.append(e)
        elif phase != "finished" and e.pid == pid and e.attrs.get("request_id") == rid:
            out.phases.append(e)
    out.phases.sort(key=lambda e: e.start_ns)
    return out
