"""The diagnosis that runs inside the agent: it takes every new Event and Sample, keeps each engine's timeline and
baselines, diagnoses each request once the kernel evidence of its time has arrived, runs the live window for
incidents, and answers `explain` and `incidents` (the control API) and the `diagnosis` snapshot.

Evidence arrives late (the kernel probes poll every second; a thread still off-CPU has no event yet), so work is
done up to a *horizon*: the oldest last-poll time of the kernel probes. Offline (agent/recording/replay.py) the
same class is fed a recording in time order.
"""
from __future__ import annotations

import statistics
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Iterable

from gpusleuth.agent.diagnosis.baseline import EngineBaseline
from gpusleuth.agent.diagnosis.context import HostInfo
from gpusleuth.agent.diagnosis.engines import Engines, EngineTimeline
from gpusleuth.agent.diagnosis.evidence import EvidenceIndex, SampleIndex
from gpusleuth.agent.diagnosis.budget import build_budget
from gpusleuth.agent.diagnosis.causes import is_likely
from gpusleuth.agent.diagnosis.explain import Diagnosis, diagnose, stop_lookup, summarize, to_dict
from gpusleuth.agent.diagnosis.hostinfo import CPU_SERIES
from gpusleuth.agent.diagnosis.incidents import IncidentTracker
from gpusleuth.agent.diagnosis.learning import (learn_clock, learn_gap, learn_gpu, learn_request, learn_step,
                                                shares_gpu)
from gpusleuth.agent.diagnosis.live import (REQUESTS_WINDOW_NS, SlowRequest, candidates, from_requests,
                                            ongoing_events)
from gpusleuth.agent.diagnosis.spans import RequestSpans, Step
from gpusleuth.probes.kernel.syscall_table import WAIT_SYSCALLS
from gpusleuth.probes.records import Event, Sample

SERIES = ("gpu.process.sm_util_pct", "gpu.sm_clock_mhz", "gpu.clock_event_reasons", "mm.faults",
          "cgroup.cpu.throttled_ns", "cgroup.cpu.nr_throttled", "cgroup.memory.pressure_some_us", CPU_SERIES)
KERNEL_SOURCES = ("sched", "syscalls")
IDLE_PIECE_NS = 500_000_000  # the engine sends a long idle wait in pieces of this length
QUIET_NS = 10_000_000_000  # an engine with no step and no heartbeat for this long is not looked at live


@dataclass(slots=True)
class MonitorConfig:
    interval_s: float = 0.25  # how often the agent ticks the diagnosis
    window_s: float = 1.0  # live window for incidents
    history_s: float = 300.0  # evidence and steps kept for explain
    max_lag_s: float = 3.0  # never wait longer than this for late evidence
    recent: int = 20_000  # diagnosed requests kept (summaries, for --slowest / --window)


class Monitor:
    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config or MonitorConfig()
        self.engines = Engines()
        self.baselines: dict[int, EngineBaseline] = {}
        self.evidence = EvidenceIndex()
        self.samples = SampleIndex(SERIES)
        self.host = HostInfo()
        self.tracker = IncidentTracker()
        self.horizon_ns = 0
        self._steps: deque[tuple[EngineTimeline, Step]] = deque()
        self._pending: deque[RequestSpans] = deque()
        self._last_clean: dict[int, Step | None] = {}  # engine -> its last rank-0 step, if clean
        self.finished: OrderedDict[tuple[int, str], RequestSpans] = OrderedDict()
        self.recent: deque[dict[str, Any]] = deque(maxlen=self.config.recent)
        self.costs_ms: deque[float] = deque(maxlen=1000)
        self.slow: deque[SlowRequest] = deque(maxlen=1000)  # recent requests with a likely top verdict
        self.ended: deque[tuple[int, int]] = deque(maxlen=20_000)  # (engine pid, end) of every diagnosed request
        self.diagnosed_total = 0
        self._last_prune = 0

    def baseline(self, pid: int) -> EngineBaseline:
        b = self.baselines.get(pid)
        if b is None:
            b = self.baselines[pid] = EngineBaseline()
        return b

    # --- intake ----------------------------------------------------------------------------------------------
    def feed(self, events: Iterable[Event] = (), samples: Iterable[Sample] = ()) -> None:
        events = [e for e in events if e.kind != "incident"]
        got = self.engines.ingest(events)
        self.evidence.add(self._evidence_of(events))
        samples = list(samples)
        self.samples.add(samples)
        self._steps.extend(got.steps)
        self._pending.extend(got.finished)

    def _evidence_of(self, events: list[Event]) -> list[Event]:
        """What the detectors can use: everything but the idle waits of processes that are not engines (a host's
        sleeping processes send hundreds a second; held for history_s they were most of the agent's memory)."""
        engines = self.engines.pids()
        return [e for e in events if e.kind != "slow_syscall" or e.pid in engines
                or e.attrs.get("syscall") not in WAIT_SYSCALLS]

    # --- work up to the horizon -------------------------------------------------------------------------------
    def advance(self, horizon_ns: int) -> None:
        """Learn from the steps and diagnose the requests that ended before `horizon_ns`."""
        self.horizon_ns = max(self.horizon_ns, horizon_ns)
        while self._steps and self._steps[0][1].end_ns <= self.horizon_ns:
            eng, s = self._steps.popleft()
            base = self.baseline(eng.pid)
            gpu = gpu_of_step(self.host, s)
            is_clean = learn_step(base, self.evidence, eng, s,
                                  shares_gpu(self.samples, gpu, {eng.pid, *eng.rank_pids.values()}, s))
            if s.rank != 0:
                continue
            prev = self._last_clean.get(eng.pid)
            if is_clean and prev is not None:
                learn_gap(base, eng, prev, s)
            self._last_clean[eng.pid] = s if is_clean else None
            if is_clean:
                learn_clock(base, self.samples, gpu, s)
                if s.measured_gpu_ms is not None:  # reported by a later step, in by now
                    learn_gpu(base, s, s.measured_gpu_ms)
        while self._pending and self._pending[0].end_ns <= self.horizon_ns:
            self._diagnose_finished(self._pending.popleft())

    def _diagnose_finished(self, req: RequestSpans) -> None:
        """Budget every finished request (it teaches the part baselines); run the detectors on the slow ones.
        `explain` runs them for any request on demand."""
        eng = self.engines.engine(req.pid)
        if eng is None:
            return
        t0 = time.perf_counter()
        base = self.baseline(eng.pid)
        budget = build_budget(req, eng, base, stop_lookup(self.evidence))
        b_ms = (budget.excess_ns / 1e6, budget.expected_ns / 1e6)
        learn_request(base, budget)
        if is_likely(b_ms[0], b_ms[0], b_ms[1]):
            d = diagnose(req, eng, base, self.evidence, self.samples, self.host, budget)
            summary = d.summary()
            if d.top is not None and d.top.is_likely:
                self.slow.append(SlowRequest(eng.pid, req.start_ns, req.end_ns, d.top))
        else:
            summary = summarize(budget, [], 0.0)
        self.costs_ms.append((time.perf_counter() - t0) * 1e3)
        self.ended.append((eng.pid, req.end_ns))
        self.diagnosed_total += 1
        self.recent.append(summary)
        self.finished[(req.pid, req.request_id)] = req
        while len(self.finished) > self.config.recent:
            self.finished.popitem(last=False)

    def live(self, now_ns: int, sched: Any = None) -> list[Event]:
        """One live tick over the window ending at the horizon; returns incident Events."""
        lo, hi = self.horizon_ns - int(self.config.window_s * 1e9), self.horizon_ns
        found = []
        for eng in list(self.engines.by_pid.values()):
            pids = {eng.pid, *eng.rank_pids.values()}
            extra = ongoing_events(sched, pids, hi) if sched is not None else []
            last_beat = eng.heartbeats[-1].t_ns if eng.heartbeats else 0
            if max(eng.last_step_end_ns, last_beat) < lo - QUIET_NS and not extra:
                continue  # an engine gone quiet (exited, or idle without a server sending heartbeats)
            found += candidates(eng, self.baseline(eng.pid), self.evidence, self.samples, self.host, lo, hi, extra)
        while self.ended and self.ended[0][1] < hi - REQUESTS_WINDOW_NS:  # diagnosed in about end order
            self.ended.popleft()  # so each tick reads only the window's requests
        found += from_requests(self.slow, self.ended, hi)
        comms = {pid: eng.comm for pid, eng in self.engines.by_pid.items()}
        return self.tracker.update(found, comms, now_ns)

    def prune(self, now_ns: int) -> None:
        if now_ns - self._last_prune < 5_000_000_000:
            return
        self._last_prune = now_ns
        horizon = now_ns - int(self.config.history_s * 1e9)
        self.evidence.prune(horizon)
        self.samples.prune(horizon)
        self.engines.prune(horizon)
        # a request older than the evidence cannot be explained any more: its spans go with it (20 req/s for
        # 16 minutes held 20,000 of them, a third of the agent's memory)
        while self.finished and next(iter(self.finished.values())).end_ns < horizon:
            self.finished.popitem(last=False)

    # --- answers ----------------------------------------------------------------------------------------------
    def explain(self, request_id: str, pid: int | None = None, row: dict | None = None) -> dict[str, Any] | None:
        """The `explain` answer for a diagnosed request, or None when it is not (or no longer) known."""
        d = self.diagnosis(request_id, pid)
        return None if d is None else to_dict(d, row)

    def diagnosis(self, request_id: str, pid: int | None = None) -> Diagnosis | None:
        """A request's diagnosis, recomputed now; one still waiting for late evidence is diagnosed with what
        has arrived."""
        key = next((k for k in reversed(self.finished) if k[1] == request_id and (pid is None or k[0] == pid)), None)
        req = self.finished[key] if key is not None else next(
            (r for r in self._pending if r.request_id == request_id and (pid is None or r.pid == pid)), None)
        eng = self.engines.engine(req.pid) if req is not None else None
        if eng is None:
            return None
        return diagnose(req, eng, self.baseline(eng.pid), self.evidence, self.samples, self.host)

    def hot_threads(self) -> set[int]:
        """The engines' step threads (every rank), for the sched probe's off-CPU tracking."""
        return {tid for eng in self.engines.by_pid.values() for tid in eng.step_tids.values() if tid}

    def snapshot(self, now_ns: int) -> dict[str, Any]:
        """The `diagnosis` snapshot (plain data): open incidents, counts, per-engine state, cost."""
        costs = list(self.costs_ms)
        return {"t_ns": now_ns, "horizon_ns": self.horizon_ns,
                "open": [i.to_dict() for i in self.tracker.open.values()],
                "incidents_total": dict(self.tracker.opened_total), "diagnosed_total": self.diagnosed_total,
                "pending": len(self._pending),
                "engines": {pid: {"comm": e.comm, "step_tids": dict(e.step_tids), "steps": e.num_steps,
                                  "baseline_ready": self.baseline(pid).rank(0).is_ready}
                            for pid, e in self.engines.by_pid.items()},
                "cost_ms_median": round(statistics.median(costs), 4) if costs else None}


def gpu_of_step(host: HostInfo, s: Step) -> int | None:
    if s.gpu_uuid and s.gpu_uuid in host.gpu_index_by_uuid:
        return host.gpu_index_by_uuid[s.gpu_uuid]
    return s.gpu_index


def horizon(snapshots: dict[str, Any], now_ns: int, max_lag_ns: int) -> int:
    """The instant up to which every kernel probe has delivered its events (never more than max_lag behind)."""
    h = now_ns
    for src in KERNEL_SOURCES:
        snap = snapshots.get(src)
        if snap is not None and getattr(snap, "t_ns", 0):
            h = min(h, snap.t_ns)
    spans = snapshots.get("spans")
    if spans is not None and getattr(spans, "t_ns", 0):
        h = min(h, spans.t_ns - IDLE_PIECE_NS)
    return max(h, now_ns - max_lag_ns)
