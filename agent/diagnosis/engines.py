"""What each engine's step thread did, from its spans: steps per rank, idle waits, GC pauses, heartbeats, and the
requests in flight (diagnosis contract §1). An engine is keyed by its rank-0 process; ranks > 0 run in processes
of their own and join the engine whose step of the same number overlaps theirs.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable

from gpusleuth.agent.diagnosis.intervals import Interval
from gpusleuth.agent.diagnosis.spans import RequestSpans, Step, span_phase
from gpusleuth.probes.records import Event


@dataclass(slots=True)
class Heartbeat:
    t_ns: int
    num_in_flight: int
    tid: int  # the step thread's


@dataclass(slots=True)
class _Steps:
    """One rank's steps in start order (they never overlap on one rank)."""

    starts: list[int] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    by_id: dict[int, Step] = field(default_factory=dict)

    def add(self, s: Step) -> None:
        i = bisect.bisect_right(self.starts, s.start_ns)
        self.starts.insert(i, s.start_ns)
        self.steps.insert(i, s)
        if s.step_id >= 0:
            self.by_id[s.step_id] = s

    def overlapping(self, lo: int, hi: int) -> list[Step]:
        i = max(0, bisect.bisect_left(self.starts, lo) - 1)
        j = bisect.bisect_right(self.starts, hi)
        return [s for s in self.steps[i:j] if s.end_ns > lo and s.start_ns < hi]

    def prune(self, horizon: int) -> None:
        i = bisect.bisect_left(self.starts, horizon)
        if i:
            for s in self.steps[:i]:
                self.by_id.pop(s.step_id, None)
            del self.starts[:i], self.steps[:i]


@dataclass(slots=True)
class EngineTimeline:
    """One engine: its ranks' steps, its step thread's idle waits, GC pauses, heartbeats and requests."""

    pid: int
    comm: str = ""
    ranks: dict[int, _Steps] = field(default_factory=dict)
    rank_pids: dict[int, int] = field(default_factory=dict)  # rank -> process
    step_tids: dict[int, int] = field(default_factory=dict)  # rank -> the latest step thread id
    idle: list[Interval] = field(default_factory=list)
    gcs: list[Event] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)
    requests: dict[str, RequestSpans] = field(default_factory=dict)
    first_step_ns: int = 0
    last_step_end_ns: int = 0
    num_steps: int = 0

    def add_step(self, s: Step) -> Step | None:
        """Add a step; returns the earlier step whose GPU time this one reports, if known."""
        self.ranks.setdefault(s.rank, _Steps()).add(s)
        self.rank_pids[s.rank] = s.pid
        if s.tid:
            self.step_tids[s.rank] = s.tid
        if s.rank == 0:
            self.first_step_ns = self.first_step_ns or s.start_ns
            self.last_step_end_ns = max(self.last_step_end_ns, s.end_ns)
            self.num_steps += 1
        if s.gpu_ms is not None and s.gpu_step is not None:
            earlier = self.step_by_id(s.gpu_step, s.rank)
            if earlier is not None:
                earlier.measured_gpu_ms = s.gpu_ms
                return earlier
        return None

    def steps(self, lo: int, hi: int, rank: int = 0) -> list[Step]:
        """Steps of `rank` overlapping [lo, hi)."""
        r = self.ranks.get(rank)
        return r.overlapping(lo, hi) if r else []

    def step_by_id(self, step_id: int, rank: int = 0) -> Step | None:
        r = self.ranks.get(rank)
        return r.by_id.get(step_id) if r else None

    def idle_within(self, lo: int, hi: int) -> list[Interval]:
        i = max(0, bisect.bisect_left(self.idle, (lo, lo)) - 1)
        return [(max(a, lo), min(b, hi)) for a, b in self.idle[i:] if a < hi and b > lo]

    def gcs_within(self, lo: int, hi: int) -> list[Event]:
        return [g for g in self.gcs if g.start_ns < hi and g.end_ns > lo]

    def in_flight_at(self, t: int, max_age_ns: int = 2_000_000_000) -> int | None:
        """Requests in flight per the newest heartbeat at or before t, if it is at most `max_age_ns` old (None:
        none: a server that stopped sending heartbeats, exited or stopped, says nothing about work now)."""
        i = bisect.bisect_right([h.t_ns for h in self.heartbeats], t)
        if not i or t - self.heartbeats[i - 1].t_ns > max_age_ns:
            return None
        return self.heartbeats[i - 1].num_in_flight

    @property
    def step_tid(self) -> int:
        return self.step_tids.get(0, 0)

    def prune(self, horizon: int) -> None:
        for r in self.ranks.values():
            r.prune(horizon)
        self.idle = [i for i in self.idle if i[1] >= horizon]
        self.gcs = [g for g in self.gcs if g.end_ns >= horizon]
        self.heartbeats = [h for h in self.heartbeats if h.t_ns >= horizon] or self.heartbeats[-1:]


@dataclass(slots=True)
class Ingested:
    finished: list[RequestSpans] = field(default_factory=list)
    steps: list[tuple[EngineTimeline, Step]] = field(default_factory=list)
    gpu_reports: list[tuple[EngineTimeline, Step]] = field(default_factory=list)  # steps whose GPU time arrived


class Engines:
    """Every engine seen in the spans; `ingest` returns the requests that just finished."""

    def __init__(self) -> None:
        self.by_pid: dict[int, EngineTimeline] = {}
        self._rank_of: dict[int, int] = {}  # worker pid -> engine pid
        self._orphans: list[Step] = []  # steps of ranks > 0 whose engine is not known yet

    def engine(self, pid: int) -> EngineTimeline | None:
        return self.by_pid.get(self._rank_of.get(pid, pid))

    def pids(self) -> set[int]:
        """Every engine process: the engines' own and their ranks'."""
        out = set(self.by_pid)
        for eng in self.by_pid.values():
            out.update(eng.rank_pids.values())
        return out

    def ingest(self, events: Iterable[Event]) -> Ingested:
        """Route span events to their engines; returns what finished and which steps arrived."""
        out = Ingested()
        for e in events:
            sp = span_phase(e)
            if sp is None:
                continue
            if sp[0] == "request":
                done = self._request(sp[1], e)
                if done is not None:
                    out.finished.append(done)
            else:
                self._step_kind(sp[1], e, out)
        if self._orphans:
            self._adopt(out)
        return out

    def _request(self, phase: str, e: Event) -> RequestSpans | None:
        eng = self.by_pid.setdefault(e.pid, EngineTimeline(e.pid, e.comm))
        rid = str(e.attrs.get("request_id"))
        req = eng.requests.get(rid)
        if req is None:
            req = eng.requests[rid] = RequestSpans(rid, e.pid, int(e.attrs.get("rank") or 0))
        req.add(phase, e)
        # Under the HTTP server "finished" follows "stream"; offline and on aborts it is the engine's last span.
        return eng.requests.pop(rid) if phase == "finished" else None

    def _step_kind(self, phase: str, e: Event, out: Ingested) -> None:
        if phase == "step":
            s = Step.from_event(e)
            owner = self._rank_of.get(e.pid, e.pid if s.rank == 0 else None)
            if owner is None:
                self._orphans.append(s)
                return
            self._add(owner, s, e.comm, out)
            return
        eng = self.by_pid.setdefault(self._rank_of.get(e.pid, e.pid), EngineTimeline(e.pid, e.comm))
        if phase == "idle":
            bisect.insort(eng.idle, (e.start_ns, e.end_ns))
        elif phase == "gc":
            eng.gcs.append(e)
        elif phase == "heartbeat":
            eng.heartbeats.append(Heartbeat(e.end_ns, int(e.attrs.get("num_in_flight") or 0),
                                            int(e.attrs.get("tid") or 0)))
            if e.attrs.get("tid"):
                eng.step_tids.setdefault(0, int(e.attrs["tid"]))

    def _add(self, owner: int, s: Step, comm: str, out: Ingested) -> None:
        eng = self.by_pid.setdefault(owner, EngineTimeline(owner, comm))
        earlier = eng.add_step(s)
        out.steps.append((eng, s))
        if earlier is not None:
            out.gpu_reports.append((eng, earlier))

    def _adopt(self, out: Ingested) -> None:
        """Ranks > 0 join the engine whose rank-0 step of the same number overlaps theirs."""
        left = []
        for s in self._orphans:
            owner = self._rank_of.get(s.pid)
            if owner is None:
                owner = next((eng.pid for eng in self.by_pid.values()
                              if (r0 := eng.step_by_id(s.step_id)) is not None
                              and r0.start_ns < s.end_ns and s.start_ns < r0.end_ns + 1_000_000_000), None)
                if owner is not None:
                    self._rank_of[s.pid] = owner
            if owner is None:
                left.append(s)
            else:
                self._add(owner, s, "", out)
        self._orphans = left[-10_000:]

    def prune(self, horizon: int) -> None:
        for eng in self.by_pid.values():
            eng.prune(horizon)
            stale = [rid for rid, r in eng.requests.items() if r.end_ns and r.end_ns < horizon - 600_000_000_000]
            for rid in stale:  # never finished (the engine lost it): forget after 10 minutes
                del eng.requests[rid]
        self._orphans = [s for s in self._orphans if s.end_ns >= horizon]
