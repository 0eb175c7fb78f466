"""Cost of the GPU probe: µs per NVML call, µs per full poll per GPU, and agent CPU at 100 ms polling with 1 and all
GPUs, beside `nvidia-smi --query-gpu=... -lms 100` measured the same way in the same run.

    python benchmarks/bench_gpu_poll.py [--seconds 30] [--out benchmarks/results/bench_gpu_poll.json]
    python benchmarks/bench_gpu_poll.py --fake 4 --seconds 5     # dry run on a CPU machine (fake NVML)

CPU is read from /proc/<pid>/stat (utime+stime, every thread) between the end of a warm-up and the end of the run,
for our polling process and for nvidia-smi alike. Target: <= 1 % of one core per GPU at 100 ms.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_common import write_result

REPO = Path(__file__).resolve().parent.parent

SMI_FIELDS = ("utilization.gpu,utilization.memory,clocks.sm,clocks.mem,power.draw,temperature.gpu,"
              "temperature.memory,memory.used,memory.free,memory.reserved,pstate,clocks_event_reasons.active,"
              "pcie.link.gen.current")
SMI_FIELDS_OLD = "utilization.gpu,clocks.sm,clocks.mem,power.draw,temperature.gpu,memory.used,memory.free"
TICK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[bench_gpu_poll {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def nvml_module(fake: int):
    if fake:
        sys.path.insert(0, str(REPO / "tests"))
        from fake_nvml import FakeNvml
        nv = FakeNvml(fake)
        for g in nv.gpus:  # something for every call to chew on
            g.processes = [{"pid": os.getpid(), "used": 1 << 30}]
            g.proc_util = [(os.getpid(), time.time_ns() // 1000, 50, 10)]
        return nv
    import pynvml
    return pynvml


def make_probe(fake: int, gpus: list[int] | None = None, **cfg):
    from gpusleuth.probes.gpu.probe import GpuConfig, GpuProbe
    probe = GpuProbe(GpuConfig(gpus=gpus or [], **cfg), nvml=nvml_module(fake) if fake else None)
    probe.start()
    return probe


def per_call_us(probe, reps: int = 200) -> dict[str, float]:
    """Median µs of each NVML call one poll makes, on the first GPU, through the wrapper."""
    dev, lib, nv = probe.devices[0], probe.lib, probe.lib.nv
    h = dev.handle
    calls = {
        "utilization": ("nvmlDeviceGetUtilizationRates", h),
        "clock_sm": ("nvmlDeviceGetClockInfo", h, lib.const("NVML_CLOCK_SM", 1)),
        "power": ("nvmlDeviceGetPowerUsage", h),
        "temperature": ("nvmlDeviceGetTemperature", h, 0),
        "clock_event_reasons": ("nvmlDeviceGetCurrentClocksEventReasons", h),
        "pstate": ("nvmlDeviceGetPerformanceState", h),
        "memory_v2": ("nvmlDeviceGetMemoryInfo", h),
        "field_values_batch": ("nvmlDeviceGetFieldValues", h, [f for _, f in dev._fields]),
        "encoder": ("nvmlDeviceGetEncoderUtilization", h),
        "compute_processes": ("nvmlDeviceGetComputeRunningProcesses", h),
        "process_utilization": ("nvmlDeviceGetProcessUtilization", h, 0),
        "samples_gpu_util": ("nvmlDeviceGetSamples", h, lib.const("NVML_GPU_UTILIZATION_SAMPLES", 1), 0),
    }
    out = {}
    for name, (fn, *args) in calls.items():
        kwargs = {"version": lib.const("nvmlMemory_v2")} if name == "memory_v2" and lib.const("nvmlMemory_v2") else {}
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            lib.query(fn, *args, no_data=None, **kwargs)
            times.append(time.perf_counter() - t0)
        out[name] = round(statistics.median(times) * 1e6, 1)
    if dev.gpm is not None:
        times = []
        for _ in range(reps // 4):
            time.sleep(0.005)  # GPM wants some time between samples
            t0 = time.perf_counter()
            dev.gpm.read()
            times.append(time.perf_counter() - t0)
        out["gpm_sample_and_metrics"] = round(statistics.median(times) * 1e6, 1)
    del nv
    return out


def _timed(fn, reps: int, pause_s: float = 0.0) -> tuple[float, float]:
    """(median wall µs, mean thread-CPU µs) of `fn()` over `reps` calls."""
    wall, cpu = [], []
    for _ in range(reps):
        if pause_s:
            time.sleep(pause_s)
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return round(statistics.median(wall) * 1e6, 1), round(statistics.mean(cpu) * 1e6, 1)


def per_field_us(probe, reps: int = 50) -> dict[str, list[float]]:
    """[wall µs, CPU µs] of each field id alone, of GPM's sample and metrics calls apart, and of the incremental
    (since-last-read) process-utilisation and sample-buffer reads a detail poll makes: which reads a poll pays for."""
    from gpusleuth.probes.gpu.fields import FIELDS
    dev, lib = probe.devices[0], probe.lib
    h = dev.handle
    out: dict[str, list[float]] = {}
    for name, fid in FIELDS.items():
        out[f"field:{name}"] = list(_timed(lambda fid=fid: lib.query("nvmlDeviceGetFieldValues", h, [fid]), reps))
    out["energy_direct_call"] = list(_timed(lambda: lib.query("nvmlDeviceGetTotalEnergyConsumption", h), reps))
    if dev.gpm is not None:
        gpm = dev.gpm
        out["gpm_sample_get"] = list(_timed(lambda: gpm._sample(gpm._cur), reps, 0.005))
        req = gpm._req
        req.sample1, req.sample2 = gpm._prev, gpm._cur
        out[f"gpm_metrics_get_{req.numMetrics}"] = list(_timed(lambda: lib.query("nvmlGpmMetricsGet", req), reps))
        req.numMetrics = 1  # the request lists sm_active first after gr_engine_active: cost per metric
        out["gpm_metrics_get_1"] = list(_timed(lambda: lib.query("nvmlGpmMetricsGet", req), reps))
        gpm._build_request()
    if dev.procs is not None:
        out["processes_incremental"] = list(_timed(
            lambda: dev.procs.read((time.time_ns()) // 1000), reps // 5, 0.1))
    if dev.samples is not None:
        offset = time.time_ns() - time.monotonic_ns()
        out["sample_buffers_incremental"] = list(_timed(lambda: dev.samples.read(offset), reps // 5, 0.1))
    return out


def poll_cost(probe, n: int = 300) -> dict[str, float]:
    """Wall and thread-CPU µs of full polls (fast ones, and those that also do the detail work)."""
    fast, detail, cpu = [], [], []
    for i in range(n):
        if i % 10 == 0:
            probe._next_detail_ns = 0  # force the per-process / sample-buffer work on every 10th poll
        is_detail = i % 10 == 0
        c0, t0 = time.thread_time(), time.perf_counter()
        probe.poll(time.monotonic_ns())
        (detail if is_detail else fast).append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        time.sleep(0.01)
    n_gpus = len(probe.devices)
    q = lambda xs, p: round(sorted(xs)[int(p * (len(xs) - 1))] * 1e6, 1)  # noqa: E731
    return {"n_gpus": n_gpus, "fast_p50_us": q(fast, 0.5), "fast_p99_us": q(fast, 0.99),
            "detail_p50_us": q(detail, 0.5), "detail_p99_us": q(detail, 0.99),
            "fast_p50_us_per_gpu": round(q(fast, 0.5) / n_gpus, 1),
            "cpu_mean_us_per_poll": round(statistics.mean(cpu) * 1e6, 1)}


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (all threads)


def measure_process(cmd: list[str], seconds: float, warmup: float = 3.0) -> dict[str, float]:
    """CPU % of one core used by `cmd` between warm-up end and warm-up + seconds."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(warmup)
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited early: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        c0, t0 = proc_cpu_s(proc.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = proc_cpu_s(proc.pid), time.monotonic()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"cpu_pct": round(100 * (c1 - c0) / (t1 - t0), 3), "seconds": round(t1 - t0, 1)}


def child(args: argparse.Namespace) -> None:
    """The agent's shape for one probe: poll at a fixed cadence, feed a store, keep the snapshot."""
    from gpusleuth.agent.store import Store
    gpus = list(range(args.child_gpus)) if args.child_gpus else []
    probe = make_probe(args.fake, gpus)
    store = Store(64 << 20)
    next_at = time.monotonic()
    end = next_at + args.seconds + 10
    while time.monotonic() < end:
        result = probe.poll(time.monotonic_ns())
        store.add(result.samples, result.events)
        store.set_snapshot("gpu", result.snapshot)
        next_at += args.interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    probe.stop()


def smi_query_fields(smi: str) -> str:
    """Our field list, or a conservative one if this nvidia-smi does not know some of ours."""
    for fields in (SMI_FIELDS, SMI_FIELDS_OLD):
        ok = subprocess.run([smi, f"--query-gpu={fields}", "--format=csv,noheader", "-i", "0"],
                            capture_output=True, timeout=60).returncode == 0
        if ok:
            return fields
    return SMI_FIELDS_OLD


def device_info(probe) -> dict:
    snap = probe.poll(time.monotonic_ns()).snapshot
    return {"gpus": [g.name for g in snap.gpus], "driver": snap.driver_version,
            "nvml": snap.nvml_version, "host": platform.node(), "cpu": platform.processor(),
            "python": platform.python_version(), "status": probe.status().to_dict()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/bench_gpu_poll.json"))
    ap.add_argument("--seconds", type=float, default=30.0, help="CPU measurement window per configuration")
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--fake", type=int, default=0, help="use the fake NVML with this many GPUs (dry run)")
    ap.add_argument("--extra-intervals", default="", help="comma-separated poll intervals (s) to also measure agent "
                    "CPU at, 1 GPU (e.g. 1.0: what a slower cadence would cost)")
    ap.add_argument("--child-gpus", type=int, default=-1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_gpus >= 0:
        return child(args)
    log(f"starting ({'fake NVML' if args.fake else 'real NVML'})")
    probe = make_probe(args.fake)
    result = {"benchmark": "bench_gpu_poll", "interval_s": args.interval, "device": device_info(probe)}
    n = len(probe.devices)
    log(f"{n} GPU(s): {result['device']['gpus']}; per-call costs")
    result["per_call_us"] = per_call_us(probe)
    log(f"per-call µs: {result['per_call_us']}")
    result["per_field_us"] = per_field_us(probe)
    log(f"per-field/stage [wall µs, cpu µs]: {result['per_field_us']}")
    result["poll"] = poll_cost(probe)
    log(f"full poll: {result['poll']}")
    probe.stop()
    me = [sys.executable, str(Path(__file__).resolve()), "--seconds", str(args.seconds), "--interval",
          str(args.interval), "--fake", str(args.fake)]
    smi = shutil.which("nvidia-smi") if not args.fake else None
    smi_fields = smi_query_fields(smi) if smi else ""
    result["nvidia_smi_query"] = smi_fields
    cpu = {}
    for label, k in (("1_gpu", 1), (f"{n}_gpus", n)) if n > 1 else (("1_gpu", 1),):
        log(f"agent CPU at {args.interval * 1e3:.0f} ms with {k} GPU(s) for {args.seconds:.0f} s")
        cpu[f"agent_{label}"] = measure_process(me + ["--child-gpus", str(k)], args.seconds)
        cpu[f"agent_{label}"]["cpu_pct_per_gpu"] = round(cpu[f"agent_{label}"]["cpu_pct"] / k, 3)
        log(f"  agent: {cpu[f'agent_{label}']}")
        if smi:
            cmd = [smi, f"--query-gpu={smi_fields}", "--format=csv,noheader,nounits",
                   "-lms", str(int(args.interval * 1000)), "-i", ",".join(map(str, range(k)))]
            try:
                ref = measure_process(cmd, args.seconds)
                ref["cpu_pct_per_gpu"] = round(ref["cpu_pct"] / k, 3)
            except RuntimeError as exc:  # keep our figures even if the reference cannot run
                ref = {"error": str(exc)}
            cpu[f"nvidia_smi_{label}"] = ref
            log(f"  nvidia-smi: {ref}")
    for interval in filter(None, args.extra_intervals.split(",")):
        label = f"agent_1_gpu_at_{float(interval):g}s"
        log(f"agent CPU at {float(interval) * 1e3:.0f} ms with 1 GPU for {args.seconds:.0f} s (not the target row)")
        cmd = me[:]
        cmd[cmd.index("--interval") + 1] = interval
        cpu[label] = measure_process(cmd + ["--child-gpus", "1"], args.seconds)
        log(f"  agent: {cpu[label]}")
    result["cpu"] = cpu
    result["target_cpu_pct_per_gpu"] = 1.0
    result["is_target_met"] = all(v["cpu_pct_per_gpu"] <= 1.0 for k, v in cpu.items()
                                  if k.startswith("agent_") and "_at_" not in k)
    out = write_result(args.out, result)
    log(f"wrote {out}: target met = {result['is_target_met']}")


if __name__ == "__main__":
    main()
