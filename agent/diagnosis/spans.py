"""The engine's own spans among the agent's Events (diagnosis contract §1): request phases and step-thread spans.

The span intake turns a request span into an Event `request.<phase>` and a step-kind span into `engine.<phase>`
(older intakes wrote every step-kind span as `engine.step`, with the phase, if any, in the attributes). This
module is the one place that knows those names; everything else reads Step / RequestSpans.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpusleuth.probes.records import Event

REQUEST_PREFIX = "request."
ENGINE_PREFIX = "engine."
REQUEST_PHASES = ("received", "queued", "prefill", "decode", "stream")
STEP_PHASES = ("step", "idle", "gc", "heartbeat")


def span_phase(e: Event) -> tuple[str, str] | None:
    """("request", phase) or ("step", phase) for an engine span Event, None for anything else."""
    kind = e.kind
    if kind.startswith(REQUEST_PREFIX):
        return "request", kind[len(REQUEST_PREFIX):]
    if kind.startswith(ENGINE_PREFIX):
        phase = kind[len(ENGINE_PREFIX):]
        if phase == "step":
            phase = str(e.attrs.get("phase") or "step")
        return ("step", phase) if phase in STEP_PHASES else None
    return None


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _float(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


@dataclass(slots=True)
class Step:
    """One scheduler step of one rank, as its span describes it."""

    start_ns: int
    end_ns: int
    pid: int
    rank: int
    tid: int  # 0: the engine did not say (an older engine)
    step_id: int
    num_decode: int
    num_prefill: int
    num_prefill_tokens: int
    request_ids: tuple[str, ...] = ()  # decode ids first, then prefill ids (engine order)
    gpu_index: int | None = None
    gpu_uuid: str | None = None
    gpu_ms: float | None = None  # GPU time of step `gpu_step` (an earlier one)
    gpu_step: int | None = None
    tp_wait_ms: float | None = None
    num_running: int | None = None
    num_waiting: int | None = None
    kv_usage: float | None = None
    num_preempted: int = 0
    preempted_ids: tuple[str, ...] = ()
    measured_gpu_ms: float | None = None  # this step's own GPU time, set when a later span reports it

    @property
    def dur_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def prefill_ids(self) -> tuple[str, ...]:
        """Requests whose prompt (chunk) ran in this step."""
        if len(self.request_ids) == self.num_decode + self.num_prefill:
            return self.request_ids[self.num_decode:]
        return ()

    @classmethod
    def from_event(cls, e: Event) -> "Step":
        a = e.attrs
        num_decode, num_prefill = _int(a.get("num_decode")), _int(a.get("num_prefill"))
        ptoks = a.get("num_prefill_tokens")
        ptoks = _int(ptoks) if ptoks is not None else max(0, _int(a.get("tokens")) - num_decode)
        gi = a.get("gpu_index")
        return cls(e.start_ns, e.end_ns, e.pid, _int(a.get("rank")), _int(a.get("tid")) or e.tid,
                   _int(a.get("step_id"), -1), num_decode, num_prefill, ptoks,
                   tuple(str(r) for r in a.get("request_ids") or ()), None if gi is None else _int(gi),
                   a.get("gpu_uuid"), _float(a.get("gpu_ms")), None if a.get("gpu_step") is None else
                   _int(a.get("gpu_step")), _float(a.get("tp_wait_ms")),
                   None if a.get("num_running") is None else _int(a.get("num_running")),
                   None if a.get("num_waiting") is None else _int(a.get("num_waiting")),
                   _float(a.get("kv_usage")), _int(a.get("num_preempted")),
                   tuple(str(r) for r in a.get("preempted_ids") or ()))


@dataclass(slots=True)
class RequestSpans:
    """One request's phases as they arrived: phase -> (start, end), plus what its finished span said."""

    request_id: str
    pid: int
    rank: int = 0
    phases: dict[str, tuple[int, int]] = field(default_factory=dict)
    prompt_tokens: int = 0
    output_tokens: int = 0
    finished_ns: int | None = None
    finish: dict[str, Any] = field(default_factory=dict)

    def add(self, phase: str, e: Event) -> None:
        if phase == "finished":
            self.finished_ns = e.end_ns
            self.output_tokens = _int(e.attrs.get("tokens"))
            self.finish = dict(e.attrs)
            return
        lo, hi = self.phases.get(phase, (e.start_ns, e.end_ns))
        self.phases[phase] = (min(lo, e.start_ns), max(hi, e.end_ns))
        if phase == "queued" and e.attrs.get("tokens"):
            self.prompt_tokens = _int(e.attrs.get("tokens"))

    @property
    def start_ns(self) -> int:
        return min(a for a, _ in self.phases.values()) if self.phases else (self.finished_ns or 0)

    @property
    def end_ns(self) -> int:
        ends = [b for _, b in self.phases.values()] + ([self.finished_ns] if self.finished_ns else [])
        return max(ends) if ends else 0

    @property
    def is_complete(self) -> bool:
        """Finished, and (under the HTTP server) streamed: nothing more will arrive for it."""
        return self.finished_ns is not None


def request_spans(request_id: str, pid: int, events: list[Event]) -> RequestSpans:
    """A request's phases gathered from Events (a recording, or the store's ring)."""
    out = RequestSpans(request_id, pid)
    for e in sorted(events, key=lambda e: e.start_ns):
        sp = span_phase(e)
        if sp and sp[0] == "request" and e.pid == pid and str(e.attrs.get("request_id")) == request_id:
            out.rank = _int(e.attrs.get("rank"))
            out.add(sp[1], e)
    return out
