"""One finished request as an OTLP trace (OpenTelemetry GenAI conventions), built with the `opentelemetry-proto`
messages: a SERVER root span for the request, a child span per phase, the diagnosis' budget and top verdict as
attributes, incidents of its engine that overlapped it as span events. Times: the agent's CLOCK_MONOTONIC plus its
wall-clock offset.

A request that came in over OTLP (probes/otlp) keeps the sender's trace id, so the agent's spans join the engine's
own trace in the collector; others get a fresh one.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

PHASES = ("received", "queued", "prefill", "decode", "stream")
PART_OF_PHASE = {"received": "arrival", "queued": "queue", "prefill": "prefill", "decode": "decode",
                 "stream": "stream"}


@dataclass(slots=True)
class FinishedRequest:
    """What the exporter gathered of one request from the store's request.* events."""

    pid: int
    request_id: str
    comm: str = ""
    phases: dict[str, tuple[int, int]] = field(default_factory=dict)
    finish: dict[str, Any] = field(default_factory=dict)  # the finished span's attributes (+ "tokens")
    prompt_tokens: int = 0

    @property
    def start_ns(self) -> int:
        return min((a for a, _ in self.phases.values()), default=self.finish.get("_end_ns", 0))

    @property
    def end_ns(self) -> int:
        return max([b for _, b in self.phases.values()] + [self.finish.get("_end_ns", 0)])


def _value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=str(v))


def attributes(d: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in d.items() if v is not None]


def resource() -> Resource:
    return Resource(attributes=attributes({"service.name": "gpusleuth-agent", "host.name": socket.gethostname(),
                                           "process.pid": os.getpid()}))


def _ids(req: FinishedRequest) -> tuple[bytes, bytes]:
    trace = req.finish.get("trace_id")
    try:
        trace_id = bytes.fromhex(trace) if isinstance(trace, str) and len(trace) == 32 else os.urandom(16)
    except ValueError:
        trace_id = os.urandom(16)
    return trace_id, os.urandom(8)


def request_attributes(req: FinishedRequest, summary: dict | None, report: dict | None) -> dict[str, Any]:
    f = req.finish
    out: dict[str, Any] = {
        "gen_ai.operation.name": "text_completion", "gen_ai.request.model": f.get("model"),
        "gen_ai.request.id": req.request_id, "gen_ai.usage.input_tokens": req.prompt_tokens,
        "gen_ai.usage.output_tokens": int(f.get("tokens") or 0), "gen_ai.latency.time_to_first_token": f.get("ttft_s"),
        "gen_ai.latency.time_per_output_token": f.get("tpot_s"), "gen_ai.latency.e2e": f.get("e2e_s"),
        "gen_ai.response.finish_reasons": f.get("status"), "process.pid": req.pid, "process.executable.name": req.comm,
        "gpusleuth.source": f.get("source", "spans")}
    if summary is not None:
        out.update({f"gpusleuth.budget.{k}": summary.get(k) for k in ("actual_ms", "expected_ms", "excess_ms",
                                                                       "unexplained_ms")})
        out["gpusleuth.verdict.cause"] = summary.get("cause")
        out["gpusleuth.verdict.share"] = summary.get("share")
        out["gpusleuth.verdict.is_likely"] = bool(summary.get("is_likely"))
    top = (report or {}).get("verdicts") or []
    if top:
        v, culprit = top[0], top[0].get("culprit") or {}
        out.update({"gpusleuth.verdict.explained_ms": v.get("explained_ms"), "gpusleuth.verdict.evidence":
                    v.get("evidence"), "gpusleuth.verdict.runbook": v.get("runbook"),
                    **{f"gpusleuth.verdict.culprit.{k}": culprit.get(k) for k in ("pid", "tid", "comm", "cgroup")},
                    "gpusleuth.verdicts": ", ".join(f"{x['cause']} {x['explained_ms']}ms" for x in top)})
    return out


def _parts(report: dict | None) -> dict[str, dict]:
    return {p["part"]: p for p in ((report or {}).get("budget") or {}).get("parts", [])}


def trace_spans(req: FinishedRequest, offset_ns: int, summary: dict | None = None, report: dict | None = None,
                incidents: list[dict] = ()) -> list[Span]:
    """The root span and one child per phase; budget and verdict as attributes, incidents as events."""
    trace_id, root_id = _ids(req)
    model = req.finish.get("model")
    is_error = req.finish.get("status") == "error"
    root = Span(trace_id=trace_id, span_id=root_id, name=f"text_completion {model}" if model else "text_completion",
                kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=req.start_ns + offset_ns,
                end_time_unix_nano=req.end_ns + offset_ns, attributes=attributes(request_attributes(req, summary, report)),
                status=Status(code=Status.STATUS_CODE_ERROR if is_error else Status.STATUS_CODE_UNSET))
    for inc in incidents:
        root.events.add(time_unix_nano=int(inc.get("onset_ns") or req.start_ns) + offset_ns, name="gpusleuth.incident",
                        attributes=attributes({"gpusleuth.incident.id": inc.get("id"), "gpusleuth.incident.cause":
                                               inc.get("cause"), "gpusleuth.incident.evidence": inc.get("evidence"),
                                               "gpusleuth.incident.runbook": inc.get("runbook"),
                                               "gpusleuth.incident.culprit.pid": (inc.get("culprit") or {}).get("pid"),
                                               "gpusleuth.incident.culprit.comm": (inc.get("culprit") or {}).get("comm")}))
    out, parts = [root], _parts(report)
    for phase in (p for p in PHASES if p in req.phases):
        lo, hi = req.phases[phase]
        part = parts.get(PART_OF_PHASE[phase], {})
        out.append(Span(trace_id=trace_id, span_id=os.urandom(8), parent_span_id=root_id, name=phase,
                        kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=lo + offset_ns,
                        end_time_unix_nano=hi + offset_ns, attributes=attributes({
                            "gpusleuth.phase": phase, "gpusleuth.budget.actual_ms": part.get("actual_ms"),
                            "gpusleuth.budget.expected_ms": part.get("expected_ms"),
                            "gpusleuth.budget.excess_ms": part.get("excess_ms")})))
    return out


def resource_spans(spans: list[Span]) -> ResourceSpans:
    return ResourceSpans(resource=resource(), scope_spans=[ScopeSpans(
        scope=InstrumentationScope(name="gpusleuth.exporters.otlp_traces"), spans=spans)])
