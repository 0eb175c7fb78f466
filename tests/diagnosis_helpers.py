"""Builders for the diagnosis tests: engine spans as the span intake turns them into Events, a Monitor fed with
them, and the recorded fixtures of tests/fixtures/diagnosis/ (real runs of the fault suite)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from gpusleuth.agent.diagnosis.monitor import Monitor
from gpusleuth.agent.recording.diagnosis import replay_monitor
from gpusleuth.probes.records import Event, Sample

MS = 1_000_000
PID, TID = 100, 101
FIXTURES = Path(__file__).with_name("fixtures") / "diagnosis"


def step(i: int, t: int, dur: int, ids: list[str], num_decode: int | None = None, prefill_tokens: int = 0,
         **attrs) -> Event:
    nd = len(ids) if num_decode is None else num_decode
    return Event("engine.step", "spans", t, t + dur, pid=PID, comm="gs-engine", attrs={
        "request_id": f"step-{i}", "rank": 0, "tid": TID, "num_decode": nd, "num_prefill": len(ids) - nd,
        "num_prefill_tokens": prefill_tokens, "request_ids": ids, "step_id": i, "num_running": len(ids),
        "num_waiting": 0, "kv_usage": 0.1, **attrs})


def request(rid: str, t0: int, t_sched: int, t_first: int, t_end: int) -> list[Event]:
    """A request's phase spans: received 1 ms, queued, prefill, decode, stream 1 ms, finished."""
    def span(phase: str, a: int, b: int, **attrs) -> Event:
        return Event(f"request.{phase}", "spans", a, b, pid=PID, comm="gs-engine", attrs={"request_id": rid, **attrs})
    return [span("received", t0 - MS, t0), span("queued", t0, t_sched, tokens=10), span("prefill", t_sched, t_first),
            span("decode", t_first, t_end), span("stream", t_end, t_end + MS),
            span("finished", t_end + MS, t_end + MS, tokens=20)]


class Engine:
    """A synthetic engine serving one request at a time: a 10 ms prefill step, then `decode_steps` steps."""

    def __init__(self, decode_ms: float = 10.0, decode_steps: int = 20) -> None:
        self.t = 1_000_000_000
        self.i = 0
        self.decode_ns = int(decode_ms * MS)
        self.decode_steps = decode_steps
        self.events: list[Event] = []

    def serve(self, rid: str, extra_ns: dict[int, int] | None = None, gap_ns: int = 0) -> tuple[int, int]:
        """One request; `extra_ns`: decode step index -> ns added to that step. Returns its decode window."""
        t0 = self.t
        self.i += 1
        self.events.append(step(self.i, t0 + MS, 10 * MS, [rid], num_decode=0, prefill_tokens=10))
        first = t = t0 + 11 * MS
        for k in range(self.decode_steps):
            self.i += 1
            d = self.decode_ns + (extra_ns or {}).get(k, 0)
            self.events.append(step(self.i, t, d, [rid]))
            t += d + gap_ns
        self.events += request(rid, t0, t0 + MS, first, t)
        self.t = t + 300 * MS
        return first, t

    def serve_clean(self, n: int) -> None:
        for r in range(n):
            self.serve(f"warm{r}")


def monitor(events: list[Event], samples: list[Sample] = ()) -> Monitor:
    """The diagnosis run over recorded events as `agent explain --recording` runs it."""
    return replay_monitor(list(events), list(samples))


def fixture(name: str) -> dict:
    """A recorded fault-suite window (tests/fixtures/diagnosis_make_fixtures.py): events, samples, truth."""
    with gzip.open(FIXTURES / f"{name}.json.gz", "rt") as f:
        data = json.load(f)
    data["events"] = [Event.from_dict(e) for e in data["events"]]
    data["samples"] = [Sample(s["series"], s["t_ns"], s["value"], s["labels"]) for s in data["samples"]]
    return data
