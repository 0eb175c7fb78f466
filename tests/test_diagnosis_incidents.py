"""agent/diagnosis: the live window opens an incident while an engine is stuck, updates it, closes it after; the
exporter shows it with bounded labels."""
from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from gpusleuth.agent.diagnosis.monitor import Monitor
from gpusleuth.agent.store import Store
from gpusleuth.exporters.incidents import IncidentCollector
from gpusleuth.probes.records import Event
from tests.diagnosis_helpers import MS, PID, TID, Engine

S = 1_000_000_000


def _heartbeat(t: int, in_flight: int) -> Event:
    return Event("engine.heartbeat", "spans", t, t, pid=PID, comm="gs-engine",
                 attrs={"num_in_flight": in_flight, "tid": TID})


def _warm_monitor() -> tuple[Monitor, Engine]:
    eng = Engine()
    eng.serve_clean(40)
    m = Monitor()
    m.feed(sorted(eng.events, key=lambda e: e.end_ns))
    m.advance(eng.t)
    return m, eng


def test_a_frozen_engine_is_an_incident_while_it_lasts_then_closes():
    m, eng = _warm_monitor()
    onset = eng.t
    m.feed([_heartbeat(onset - S // 2, 1)])  # a request is in flight, then nothing: the engine is stopped
    frozen = SimpleNamespace(ongoing=[SimpleNamespace(tid=TID, pid=PID, comm="gs-step", state="T",
                                                      since_ns=onset, cpu=1)])
    opened = []
    for k in range(1, 9):  # 2 s of live ticks, every 250 ms
        now = onset + k * S // 4
        m.advance(now)
        opened += [e for e in m.live(now, frozen) if e.attrs["is_open"]]
    assert opened, "no incident while frozen"
    first = opened[0].attrs
    assert first["cause"] == "process_frozen" and first["culprit"]["pid"] == PID and first["is_open"]
    assert first["opened_ns"] - onset <= 2 * S and first["onset_ns"] == onset
    assert [i["cause"] for i in m.tracker.incidents(is_open=True)] == ["process_frozen"]
    snap = m.snapshot(onset + 2 * S)
    store = Store(8 << 20)
    store.set_snapshot("diagnosis", snap)
    reg = CollectorRegistry()
    reg.register(IncidentCollector(store))
    labels = {"cause": "process_frozen", "engine_pid": str(PID), "culprit_comm": first["culprit"]["comm"]}
    assert reg.get_sample_value("gpusleuth_incident_active", labels) == 1
    assert reg.get_sample_value("gpusleuth_incidents_total", {"cause": "process_frozen"}) == 1
    # resumed: the probe reports the stop that ended, steps run again; the incident closes within a few seconds
    t = onset + 2 * S
    eng.t = t
    for r in range(12):
        eng.serve(f"after{r}")
    stop = Event("offcpu", "sched", onset, t, pid=PID, tid=TID, comm="gs-step",
                 attrs={"state": "T", "waker_pid": 4242, "waker_tid": 4242, "waker_comm": "kill"})
    m.feed([stop] + sorted([e for e in eng.events if e.start_ns >= t], key=lambda e: e.end_ns))
    closed = []
    for k in range(1, 24):
        now = t + k * S // 4
        m.advance(now)
        closed += [e for e in m.live(now, SimpleNamespace(ongoing=[])) if not e.attrs["is_open"]]
    assert [e.attrs["id"] for e in closed] == [first["id"]]
    assert m.tracker.incidents(is_open=True) == [] and len(m.tracker.incidents(since_ns=onset)) == 1
    store.set_snapshot("diagnosis", m.snapshot(t + 6 * S))
    assert reg.get_sample_value("gpusleuth_incident_active", labels) is None
    assert reg.get_sample_value("gpusleuth_incidents_total", {"cause": "process_frozen"}) == 1


def test_a_stalled_loop_with_work_in_flight_is_an_incident_an_idle_one_is_not():
    m, eng = _warm_monitor()
    onset = eng.t
    beats = [_heartbeat(onset + k * S // 2, 0) for k in range(4)]
    idle = Event("engine.idle", "spans", onset, onset + 2 * S, pid=PID, comm="gs-engine", attrs={"tid": TID})
    m.feed(beats + [idle])
    for k in range(1, 9):
        m.advance(onset + k * S // 4)
        assert not m.live(onset + k * S // 4), "an idle engine is no incident"
    onset2 = onset + 2 * S
    m.feed([_heartbeat(onset2 + k * S // 2, 3) for k in range(4)])  # work in flight, no step, no idle span
    opened = []
    for k in range(1, 9):
        now = onset2 + k * S // 4
        m.advance(now)
        opened += m.live(now)
    assert opened and opened[0].attrs["cause"] == "engine_stall"
    assert opened[0].attrs["opened_ns"] - onset2 <= 2 * S


def test_an_engine_that_went_away_with_work_in_flight_is_no_lasting_stall():
    m, eng = _warm_monitor()
    t = eng.t
    m.feed([_heartbeat(t + k * S // 2, 2) for k in range(6)])  # 3 s of heartbeats, then the process is gone
    opened = []
    for k in range(1, 40):  # 10 s of ticks
        now = t + k * S // 4
        m.advance(now)
        opened += m.live(now)
    assert {(e.attrs["id"], e.attrs["cause"]) for e in opened} == {("inc-100-1", "engine_stall")}  # while it beat
    assert [e.attrs["is_open"] for e in opened][-1] is False
    assert m.tracker.incidents(is_open=True) == [], "no heartbeat for seconds: no evidence of work in flight"


def test_requests_open_an_incident_only_when_a_good_share_of_the_window_was_slowed():
    from gpusleuth.agent.diagnosis.attribution import Verdict
    from gpusleuth.agent.diagnosis.live import SlowRequest, from_requests
    hi = 100 * S
    ends = [hi - k * S // 6 for k in range(30)]  # 6 requests a second for 5 s
    finished = [(PID, t) for t in ends]

    def slow(n: int, cause: str) -> list[SlowRequest]:
        v = Verdict(cause, {"pid": PID, "comm": "gs-engine"}, 20 * MS, 0.8, "", {"decode": 20 * MS}, True, {})
        return [SlowRequest(PID, t - 50 * MS, t, v) for t in ends[:n]]

    assert from_requests(slow(4, "batch_interference"), finished, hi) == [], "4 of 30: an ordinary tail"
    got = from_requests(slow(10, "batch_interference"), finished, hi)
    assert [c.verdict.cause for c in got] == ["batch_interference"], "10 of 30 slowed alike: an incident"
    assert from_requests(slow(3, "queueing"), finished[:5], hi)[0].verdict.cause == "queueing", \
        "3 of 5 on a quiet engine"
    assert from_requests(slow(2, "queueing"), finished[:2], hi) == [], "never fewer than three requests"
