"""agent/diagnosis: the latency budget against a rolling baseline, and how its excess is split among findings."""
from __future__ import annotations

from gpusleuth.agent.diagnosis.attribution import attribute
from gpusleuth.agent.diagnosis.baseline import MIN_SAMPLES, WARMUP_STEPS, StepBaseline, shape_of
from gpusleuth.agent.diagnosis.budget import Budget, Part
from gpusleuth.agent.diagnosis.context import Finding
from gpusleuth.agent.diagnosis.intervals import intersect, merge, subtract, total
from gpusleuth.agent.diagnosis.spans import RequestSpans, Step
from tests.diagnosis_helpers import MS, TID, Engine, monitor
from gpusleuth.probes.records import Event


def test_interval_arithmetic():
    xs = merge([(5, 10), (0, 3), (2, 4), (10, 12)])
    assert xs == [(0, 4), (5, 12)] and total(xs) == 11
    assert intersect(xs, [(3, 6), (11, 20)]) == [(3, 4), (5, 6), (11, 12)]
    assert subtract(xs, [(1, 2), (6, 11)]) == [(0, 1), (2, 4), (5, 6), (11, 12)]


def _step(dur_ms: float, decode: int = 1, prefill: int = 0, t: int = 0) -> Step:
    return Step(t, t + int(dur_ms * MS), 1, 0, TID, 0, decode, 0, prefill)


def test_baseline_skips_warmup_rate_limits_and_borrows_the_nearest_shape():
    b = StepBaseline()
    t = 0
    for _ in range(WARMUP_STEPS):
        assert not b.observe(_step(100.0, t=t), 0, True)  # warm-up steps never count, however slow
        t += 300 * MS
    assert not b.is_ready
    assert b.observe(_step(10.0, t=t), 0, True) and not b.observe(_step(10.0, t=t + MS), 0, True)  # 1 per 250 ms
    for k in range(1, MIN_SAMPLES):
        assert b.observe(_step(10.0, t=t + k * 300 * MS), 0, True)
    assert not b.observe(_step(40.0, t=t + 9 * 300 * MS), 0, True)  # 4x the shape's cost: not clean
    assert not b.observe(_step(11.0, t=t + 10 * 300 * MS), 0, False)  # evidence on its thread: not clean
    own = b.expected(1, 0)
    assert own.source == "shape" and own.dur_ns == 10 * MS
    near = b.expected(2, 0)
    assert near.source == "nearest" and near.dur_ns == 10 * MS
    assert shape_of(2, 0) != shape_of(1, 0) and shape_of(100, 0) == shape_of(120, 0)


def test_clean_requests_have_no_excess_and_a_slow_one_has_its_extra_time():
    eng = Engine()
    eng.serve_clean(40)
    first, end = eng.serve("slow", extra_ns={k: 15 * MS for k in range(10)})
    m = monitor(eng.events)
    rows = {r["request_id"]: r for r in m.recent}
    assert max(rows[f"warm{r}"]["excess_ms"] for r in range(30, 40)) < 1.0
    slow = m.explain("slow")
    parts = {p["part"]: p for p in slow["budget"]["parts"]}
    assert set(parts) == {"arrival", "queue", "prefill", "decode", "stream"}
    assert abs(parts["decode"]["excess_ms"] - 150.0) < 1.0 and parts["decode"]["baseline"] == "shape"
    assert slow["verdicts"] == [] and abs(slow["unexplained_ms"] - slow["budget"]["excess_ms"]) < 1e-6  # no evidence


def test_no_baseline_means_no_excess():
    eng = Engine()
    eng.serve("first", extra_ns={0: 500 * MS})
    report = monitor(eng.events).explain("first")
    assert report["budget"]["excess_ms"] == 0 and {p["baseline"] for p in report["budget"]["parts"]} == {"none"}


def _budget(excess_ms: float) -> Budget:
    part = Part("decode", 0, int(100 * MS + excess_ms * MS), 100 * MS, "shape")
    return Budget(RequestSpans("r", 1), {"decode": part})


def test_attribution_never_counts_a_nanosecond_twice_and_scales_to_the_excess():
    a = Finding("process_frozen", {"pid": 1, "comm": "x"}, "", intervals={"decode": [(0, 30 * MS)]})
    b = Finding("cpu_contention", {"pid": 2, "comm": "y"}, "", intervals={"decode": [(20 * MS, 40 * MS)]})
    c = Finding("queueing", {"pid": 1, "comm": "x"}, "", amounts={"decode": 10 * MS})
    verdicts, unexplained = attribute(_budget(100.0), [a, b, c])
    got = {v.cause: v.explained_ns / MS for v in verdicts}
    assert got == {"process_frozen": 30.0, "cpu_contention": 10.0, "queueing": 10.0}  # b lost 20..30 to a
    assert abs(unexplained / MS - 50.0) < 1e-6 and verdicts[0].cause == "process_frozen"
    verdicts, unexplained = attribute(_budget(25.0), [a, b, c])  # claims of 50 ms for 25 ms of excess
    assert abs(sum(v.explained_ns for v in verdicts) / MS - 25.0) < 1e-6 and unexplained == 0
    assert abs(verdicts[0].share - 15 / 25) < 1e-9 and verdicts[0].is_likely


def test_discount_leaves_the_usual_sleep_unexplained():
    f = Finding("engine_stall", {"pid": 1, "comm": "x"}, "", intervals={"decode": [(0, 40 * MS)]},
                discount={"decode": 30 * MS})
    verdicts, unexplained = attribute(_budget(40.0), [f])
    assert abs(verdicts[0].explained_ns / MS - 10.0) < 1e-6 and abs(unexplained / MS - 30.0) < 1e-6
    assert not verdicts[0].is_likely  # 10 of 40 ms


def test_a_runq_wait_on_the_step_thread_is_cpu_contention_by_the_task_that_ran():
    eng = Engine()
    eng.serve_clean(40)
    first, _ = eng.serve("slow", extra_ns={k: 15 * MS for k in range(4)})
    t = first
    for k in range(4):
        eng.events.append(Event("runq_delay", "sched", t + 2 * MS, t + 17 * MS, pid=100, tid=TID, comm="gs-step",
                                attrs={"cpu": 1, "idle_ns": 0, "culprits": [
                                    {"pid": 999, "tid": 1000, "comm": "stress", "ns": 12 * MS},
                                    {"pid": 0, "tid": 0, "comm": "swapper/1", "ns": 3 * MS}]}))
        t += 25 * MS
    v = monitor(eng.events).explain("slow")["verdicts"][0]
    assert v["cause"] == "cpu_contention" and v["culprit"]["pid"] == 999 and v["culprit"]["tid"] == 1000
    assert abs(v["explained_ms"] - 60.0) < 1.0 and v["is_likely"] and "swapper" not in v["evidence"]
