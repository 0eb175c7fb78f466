"""`explain`: one request's phases, the host evidence on its path, and ranked verdicts, as the control API shapes it.

Used by the control socket for a live agent and by offline recordings alike: both hand in the request (as the span
intake's request book shapes it) and the events overlapping its window.
"""
from __future__ import annotations

from typing import Any, Iterable

from gpusleuth.agent.diagnosis.phases import phase_of, split_window
from gpusleuth.agent.diagnosis.verdicts import rank_causes
from gpusleuth.probes.records import Event

MAX_EVIDENCE_SHOWN = 500


def explain(request: dict[str, Any], events: Iterable[Event]) -> dict[str, Any]:
    """{request, phases, steps, overlapping, idle_waits_hidden, verdicts} for one finished request."""
    window = split_window(request, events)
    verdicts = rank_causes(request, window.phase_times(), window.evidence)
    return {"request": request,
            "phases": [{"phase": phase_of(e.kind), "start_ns": e.start_ns, "end_ns": e.end_ns,
                        "rank": e.attrs.get("rank"), "tokens": e.attrs.get("tokens"),
                        "batch_size": e.attrs.get("batch_size")} for e in window.phases],
            "steps": len(window.steps),
            "overlapping": [e.to_dict() for e in window.evidence[-MAX_EVIDENCE_SHOWN:]],
            "idle_waits_hidden": window.idle_waits,
            "verdicts": [v.to_dict() for v in verdicts]}

