"""GPU contention on a GPU host, without the fault suite's network namespace (GPU hosts here lack iproute2): a real
agent (spans + gpu probes; the kernel probes run where bcc is), the bundled engine (tiny, CUDA) under steady load,
and a bf16 GEMM loop in another process on the same GPU for `--hog-s`. Scores the requests that finished while the
hog ran and were slowed (>= max(20 %, 5 ms) over the clean median e2e): top verdict gpu_contention, culprit the
hog's pid; and the clean requests' false alarms.  python3 benchmarks/bench_diagnosis_gpu.py --out DIR/gpu.json
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_common import log, write_result
from gpusleuth.agent import harness
from gpusleuth.agent.cli.loadgen import LoadGenerator
from gpusleuth.agent.control.client import ControlClient

ROOT = Path(__file__).resolve().parents[1]


def _engine(tmp: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "GPUSLEUTH_SPAN_SOCKET": str(tmp / "spans.sock")}
    cmd = [sys.executable, "-m", "gpusleuth.engine", "serve", "--preset", "tiny", "--port", str(port),
           "--device", "cuda", "--num-gpu-blocks", "96", "--max-num-seqs", "8"]
    p = subprocess.Popen(cmd, env=env, stdout=open(tmp / "engine.log", "w"), stderr=subprocess.STDOUT)
    harness.wait_for(lambda: _ok(f"http://127.0.0.1:{port}/health"), timeout=600, interval=1.0)
    return p


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def score(client: ControlClient, t_on: int, t_off: int, hog_pid: int) -> dict:
    rows = client.call("requests", limit=100000)
    clean = [r for r in rows if r["end_ns"] < t_on and r["e2e_s"]]
    normal = statistics.median(r["e2e_s"] for r in clean[-200:])
    during = [r for r in rows if t_on <= r["start_ns"] and r["end_ns"] <= t_off + 2e9]
    slowed = [r for r in during if r["e2e_s"] >= normal + max(0.2 * normal, 0.005)]
    top, each = [], []
    for r in slowed:
        rep = client.call("explain", request_id=r["request_id"])
        v = rep["verdicts"]
        top.append(v[0] if v else None)
        each.append({"request_id": r["request_id"], "e2e_ms": round(r["e2e_s"] * 1e3, 2),
                     "start_s": round((r["start_ns"] - t_on) / 1e9, 3), "excess_ms": rep["budget"]["excess_ms"],
                     "verdicts": [{k: x[k] for k in ("cause", "explained_ms", "culprit", "evidence")} for x in v[:3]]})
    hits = [v for v in top if v and v["cause"] == "gpu_contention"]
    fa = []
    for r in clean[-60:]:
        v = client.call("explain", request_id=r["request_id"])["verdicts"]
        fa.append(bool(v) and v[0]["is_likely"])
    return {"normal_e2e_ms": round(normal * 1e3, 2), "during": len(during), "slowed": len(slowed),
            "top1": round(len(hits) / max(1, len(slowed)), 3),
            "culprit": round(sum(1 for v in hits if v["culprit"].get("pid") == hog_pid) / max(1, len(slowed)), 3),
            "top_causes": sorted({(v or {}).get("cause", "none") for v in top}),
            "example": hits[0]["evidence"] if hits else (top[0]["evidence"] if top and top[0] else ""),
            "clean_false_alarm": round(sum(fa) / max(1, len(fa)), 3), "clean_explained": len(fa),
            "incidents": [i["cause"] for i in client.call("incidents", since_ns=t_on)], "slowed_requests": each}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--agent", default=harness.AGENT)
    p.add_argument("--warm-s", type=float, default=40.0)
    p.add_argument("--hog-s", type=float, default=20.0)
    p.add_argument("--size", type=int, default=8192)
    a = p.parse_args()
    harness.AGENT = a.agent
    tmp = Path(tempfile.mkdtemp(prefix="gs-gpu-"))
    cfg = harness.write_config(tmp, ["spans", "gpu", "sched", "syscalls"],
                               extra=f'[probes.spans]\nsocket = "{tmp}/spans.sock"\nrecent_requests = 20000\n')
    started = harness.run_agent("--config", str(cfg), "start")
    assert started.returncode == 0, started.stderr
    engine = hog = load = None
    try:
        engine = _engine(tmp, harness.free_port())
        load = LoadGenerator(f"http://127.0.0.1:{engine.args[engine.args.index('--port') + 1]}", rate_per_s=5.0)
        load.start()
        time.sleep(a.warm_s)
        t_on = time.monotonic_ns()
        hog = subprocess.Popen([sys.executable, str(ROOT / "benchmarks/scenarios/actors.py"), "gemm", "--comm",
                                "gemm-hog", "--device", "cuda:0", "--size", str(a.size)])
        time.sleep(a.hog_s)
        hog.terminate()
        hog.wait(timeout=30)
        t_off = time.monotonic_ns()
        time.sleep(5)
        with ControlClient(str(tmp / "agent.sock")) as client:
            result = {"benchmark": "bench_diagnosis_gpu", "hog_pid": hog.pid, **score(client, t_on, t_off, hog.pid),
                      "probes": {n: s["state"] for n, s in client.call("status")["probes"].items()}}
        log(str({k: v for k, v in result.items() if k != "slowed_requests"}))
        write_result(a.out, result)
    finally:
        for proc in (hog, engine):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if load is not None:
            load.stop()
        harness.run_agent("--config", str(cfg), "stop")
        shutil.copy(tmp / "agent.log", Path(a.out).with_name("agent.log")) if (tmp / "agent.log").exists() else None
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
