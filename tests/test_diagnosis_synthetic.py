"""Detectors whose evidence this CPU box cannot produce (GPU time, NVML per-process samples and clocks, XIDs, TP
ranks in lockstep, the net probe's flows on a real interface), on synthetic events shaped as the probes emit them
(diagnosis contract §1, §2). A fake at the hardware boundary only: the diagnosis code is the real one."""
from __future__ import annotations

from gpusleuth.probes.records import Event, Sample
from tests.diagnosis_helpers import MS, PID, TID, Engine, monitor, request, step

UUID = "GPU-0000"
S = 1_000_000_000


class GpuEngine(Engine):
    """Engine steps on GPU 0 with CUDA-event GPU time reported one step later (as the engine does)."""

    def __init__(self, gpu_ms: float = 8.0) -> None:
        super().__init__()
        self.gpu_ms = gpu_ms
        self.slow_gpu: set[int] = set()  # step ids whose GPU time is doubled

    def serve(self, rid: str, extra_ns=None, gap_ns: int = 0):
        first, end = super().serve(rid, extra_ns, gap_ns)
        for e in self.events[-27:]:
            if e.kind == "engine.step":
                i = e.attrs["step_id"]
                ms = self.gpu_ms * (2 if i - 1 in self.slow_gpu else 1)
                e.attrs.update(gpu_index=0, gpu_uuid=UUID, gpu_ms=ms, gpu_step=i - 1)
        return first, end


def _sm(t: int, pid: int, pct: float) -> Sample:
    return Sample("gpu.process.sm_util_pct", t, pct, {"gpu": "0", "pid": str(pid)})


def test_gpu_contention_names_the_other_process_on_the_requests_gpu():
    eng = GpuEngine()
    eng.serve_clean(40)
    start = eng.t
    eng.slow_gpu = set(range(eng.i + 1, eng.i + 40))
    first, end = eng.serve("slow", extra_ns={k: 8 * MS for k in range(20)})
    samples = [_sm(t, PID, 40.0) for t in range(start - 2 * S, end, S // 2)]
    samples += [_sm(t, 4242, 55.0) for t in range(start, end, S // 2)]
    samples += [Sample("gpu.process.sm_util_pct", t, 60.0, {"gpu": "1", "pid": "777"}) for t in range(start, end, S)]
    m = monitor(eng.events, samples)
    m.host.comms[4242] = "gemm-burner"
    v = m.explain("slow")["verdicts"][0]
    assert v["cause"] == "gpu_contention" and v["culprit"]["pid"] == 4242 and v["culprit"]["gpu"] == 0
    assert 0.5 < v["culprit"]["share"] < 0.65 and "gemm-burner" in v["evidence"] and "777" not in v["evidence"]
    assert v["explained_ms"] > 0.8 * 160  # 20 steps, each 8 ms of GPU time above baseline


def test_gpu_time_above_baseline_without_another_process_is_not_contention():
    eng = GpuEngine()
    eng.serve_clean(40)
    eng.slow_gpu = set(range(eng.i + 1, eng.i + 40))
    eng.serve("slow", extra_ns={k: 8 * MS for k in range(20)})
    samples = [_sm(t, PID, 90.0) for t in range(eng.t - 20 * S, eng.t, S // 2)]
    causes = [v["cause"] for v in monitor(eng.events, samples).explain("slow")["verdicts"]]
    assert "gpu_contention" not in causes


def test_gpu_clocks_blamed_only_when_the_clock_fell_below_the_engines_baseline():
    def run(slow_mhz: float):
        eng = GpuEngine()
        eng.serve_clean(40)
        start = eng.t
        first, end = eng.serve("slow", extra_ns={k: 5 * MS for k in range(20)})
        samples = [Sample("gpu.sm_clock_mhz", t, 1980.0, {"gpu": "0"}) for t in range(1_000_000_000, start, S // 4)]
        samples += [Sample("gpu.sm_clock_mhz", t, slow_mhz, {"gpu": "0"}) for t in range(start, end + S, S // 4)]
        samples += [Sample("gpu.sm_clock_mhz", t, 800.0, {"gpu": "1"}) for t in range(start, end + S, S // 4)]
        throttle = Event("gpu_throttle", "gpu", start, end, attrs={"gpu": 0, "uuid": UUID,
                                                                   "reasons": ["sw_power_cap"], "mask": 4})
        return monitor(eng.events + [throttle], samples).explain("slow")["verdicts"]
    low = run(1200.0)
    assert low[0]["cause"] == "gpu_clocks" and low[0]["culprit"]["gpu"] == 0
    assert "sw_power_cap" in low[0]["evidence"] and "1200 MHz" in low[0]["evidence"]
    assert "gpu_clocks" not in [v["cause"] for v in run(1960.0)]  # within boost variation: not the clocks


def test_gpu_error_on_the_requests_gpu_only():
    def run(gpu: int):
        eng = GpuEngine()
        eng.serve_clean(40)
        first, _ = eng.serve("slow", extra_ns={k: 50 * MS for k in range(10)})
        xid = Event("gpu_xid", "gpu", first, first, pid=PID, comm="gs-engine",
                    attrs={"gpu": gpu, "uuid": UUID if gpu == 0 else "GPU-1111", "xid": 79,
                           "name": "GPU has fallen off the bus"})
        return monitor(eng.events + [xid]).explain("slow")["verdicts"]
    got = run(0)
    assert got[0]["cause"] == "gpu_error" and "XID 79" in got[0]["evidence"]
    assert "gpu_error" not in [v["cause"] for v in run(1)]


def _two_ranks(eng: Engine, late_ms: float) -> list[Event]:
    """Rank 1 (its own process) runs every step of rank 0; while `late_ms`, rank 0 waits that long for it."""
    out = []
    for e in [e for e in eng.events if e.kind == "engine.step"]:
        slow = e.attrs["request_ids"] == ["slow"] and e.attrs["num_decode"]
        wait0 = late_ms if slow else 0.2
        e.attrs["tp_wait_ms"] = wait0
        out.append(Event("engine.step", "spans", e.start_ns, e.end_ns, pid=PID + 1, comm="gs-engine-r1", attrs={
            **e.attrs, "rank": 1, "tid": TID + 100, "tp_wait_ms": 0.1}))
    return out


def test_tp_straggler_names_the_rank_that_reached_the_collective_last():
    eng = Engine()
    eng.serve_clean(40)
    eng.serve("slow", extra_ns={k: 12 * MS for k in range(20)})
    peers = _two_ranks(eng, late_ms=12.0)
    sleep = [Event("offcpu", "sched", e.start_ns, e.start_ns + 11 * MS, pid=PID + 1, tid=TID + 100,
                   comm="gs-step-r1", attrs={"state": "S"}) for e in peers if e.attrs["tp_wait_ms"] == 0.1
             and e.attrs["request_ids"] == ["slow"] and e.attrs["num_decode"]]
    v = monitor(eng.events + peers + sleep).explain("slow")["verdicts"][0]
    assert v["cause"] == "tp_straggler" and v["culprit"]["rank"] == 1 and v["culprit"]["pid"] == PID + 1
    assert abs(v["explained_ms"] - 20 * 11.9) < 5 and "off-CPU S" in v["evidence"]


def test_batch_interference_names_the_prompts_chunked_into_its_decode():
    eng = Engine()
    eng.serve_clean(30)
    for r in range(12):  # steps that mix decode with a prompt chunk, so the baseline knows their cost
        eng.i += 1
        eng.events.append(step(eng.i, eng.t + r * 300 * MS, 30 * MS, ["x", f"p{r}"], num_decode=1,
                               prefill_tokens=256))
    eng.t += 12 * 300 * MS
    t0 = eng.t
    first = t = t0 + 11 * MS
    eng.events.append(step(eng.i + 1, t0 + MS, 10 * MS, ["slow"], num_decode=0, prefill_tokens=10))
    eng.i += 1
    for k in range(20):
        eng.i += 1
        mixed = k % 2 == 0
        ids = ["slow", f"big{k}"] if mixed else ["slow"]
        eng.events.append(step(eng.i, t, 30 * MS if mixed else 10 * MS, ids, num_decode=1,
                               prefill_tokens=256 if mixed else 0))
        t += 30 * MS if mixed else 10 * MS
    eng.events += request("slow", t0, t0 + MS, first, t)
    v = monitor(eng.events).explain("slow")["verdicts"][0]
    assert v["cause"] == "batch_interference" and v["culprit"]["request_ids"][0].startswith("big")
    assert v["explained_ms"] > 150  # 10 mixed steps, 20 ms each above decode alone


def test_network_touches_only_arrival_and_stream_and_ignores_benign_drops():
    eng = Engine()
    eng.serve_clean(40)
    first, end = eng.serve("slow", extra_ns={k: 10 * MS for k in range(10)})
    stream = next(e for e in eng.events if e.kind == "request.stream" and e.attrs["request_id"] == "slow")
    stream_end = stream.end_ns + 200 * MS  # 200 ms longer to write the response out
    eng.events = [e for e in eng.events if e is not stream and not (e.kind == "request.finished"
                                                                      and e.attrs["request_id"] == "slow")]
    eng.events += [Event("request.stream", "spans", stream.start_ns, stream_end, pid=PID, comm="gs-engine",
                         attrs=dict(stream.attrs)),
                   Event("request.finished", "spans", stream_end, stream_end, pid=PID, comm="gs-engine",
                         attrs={"request_id": "slow", "tokens": 20})]
    burst = Event("net.microburst", "net", first, stream_end, attrs={
        "interface": "eth0", "direction": "egress", "bytes": 9_000_000, "top_flows": [
            {"pid": 5151, "comm": "iperf3", "bytes": 8_500_000}, {"pid": PID, "comm": "gs-http", "bytes": 20_000}]})
    benign = Event("net.skb_drop", "net", first, stream_end, pid=PID, attrs={"reason": "NO_SOCKET", "count": 50})
    v = {x["cause"]: x for x in monitor(eng.events + [burst, benign]).explain("slow")["verdicts"]}
    net = v["network"]
    assert set(net["parts"]) <= {"arrival", "stream", "backlog"} and net["parts"]["stream"] > 150
    assert net["culprit"]["pid"] == 5151 and net["culprit"]["interface"] == "eth0"
    assert "0 drops" in net["evidence"]  # the socket-less drop is no evidence
