"""Cost of the NVTX injection library per range, side by side: the same NVTX v3 client doing N push/pop pairs with
no injection (NVTX's no-op path), and with libgsnvtx.so injected while the agent's NVTX intake receives them.

    python benchmarks/bench_nvtx.py [--ranges 1000000] [--rounds 5] [--out benchmarks/results/bench_nvtx.json]
    python benchmarks/bench_nvtx.py --torch    # also torch.cuda.nvtx.range_push/pop (a CUDA build of torch)

The C client (built here from the nvtx3 headers) times its own loop with CLOCK_MONOTONIC, in bursts of --burst
ranges 20 ms apart (a step loop's pattern; a tight loop of millions overruns the ring by design and is dropped and
counted); rounds alternate between the two modes. The torch part times range_push/range_pop from Python, where the pybind call dominates:
its figure is what a torch program pays. Reported: ns per range (a push and its pop) per mode, the added cost,
and the ranges the intake received (drops show where the flusher or socket could not keep up).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import log, write_result

REPO = Path(__file__).resolve().parent.parent
CLIENT = r"""
#include <nvtx3/nvToolsExt.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static unsigned long long now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}
int main(int argc, char **argv) {  /* bursts that fit the library's ring, as a step loop's ranges would */
    long n = atol(argv[1]), burst = atol(argv[2]), done = 0;
    unsigned long long spent = 0;
    nvtxRangePushA("warm-up"); nvtxRangePop();
    while (done < n) {
        unsigned long long t0 = now();
        for (long i = 0; i < burst; i++) { nvtxRangePushA("decode step"); nvtxRangePop(); }
        spent += now() - t0;
        done += burst;
        usleep(20000);
    }
    printf("%.3f\n", (double)spent / done);
    fflush(stdout);
    usleep(200000);
    return 0;
}
"""
TORCH = r"""
import sys, time, torch.cuda.nvtx as nvtx
n = int(sys.argv[1])
nvtx.range_push("warm-up"); nvtx.range_pop()
t0 = time.perf_counter_ns()
for _ in range(n):
    nvtx.range_push("decode step"); nvtx.range_pop()
print((time.perf_counter_ns() - t0) / n, flush=True)
time.sleep(0.2)
"""


def device() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=10).stdout.splitlines()[0].strip() or platform.processor()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), platform.machine())


def run_mode(cmd: list[str], env: dict, probe, pid_ranges: dict) -> float:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=True)
    if probe is not None:
        time.sleep(0.3)
        for e in probe.poll(time.monotonic_ns()).events:
            pid_ranges[e.pid] = pid_ranges.get(e.pid, 0) + 1
    return float(out.stdout.split()[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranges", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--burst", type=int, default=2000, help="ranges between 20 ms pauses (the ring holds 4096)")
    ap.add_argument("--torch", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/bench_nvtx.json"))
    args = ap.parse_args()
    from gpusleuth.probes.nvtx import build
    from gpusleuth.probes.nvtx.probe import NvtxConfig, NvtxProbe

    tmp = Path(tempfile.mkdtemp(prefix="bench-nvtx-"))
    lib = build.build(tmp / "libgsnvtx.so")
    src = tmp / "client.c"
    src.write_text(CLIENT)
    subprocess.run(["gcc", "-O2", f"-I{build.include_dirs()[0]}", str(src), "-o", str(tmp / "client"), "-ldl"],
                   check=True)
    probe = NvtxProbe(NvtxConfig(socket=str(tmp / "nvtx.sock"), max_events_per_poll=10_000_000))
    probe.start()
    base_env = {k: v for k, v in os.environ.items() if k != "NVTX_INJECTION64_PATH"}
    on_env = {**base_env, "NVTX_INJECTION64_PATH": str(lib), "GPUSLEUTH_NVTX_SOCKET": probe.config.socket}
    result: dict = {"device": device(), "ranges_per_round": args.ranges, "rounds": args.rounds}
    kinds = [("c", [str(tmp / "client"), str(args.ranges), str(args.burst)])]
    if args.torch:
        kinds.append(("torch", [sys.executable, "-c", TORCH, str(args.ranges // 10)]))
    try:
        for name, cmd in kinds:
            off, on, received = [], [], {}
            for r in range(args.rounds):  # interleaved: drift on a shared host hits both modes alike
                off.append(run_mode(cmd, base_env, None, received))
                on.append(run_mode(cmd, on_env, probe, received))
                log(f"{name} round {r}: no injection {off[-1]:.1f} ns/range, injected {on[-1]:.1f} ns/range")
            expected = (args.ranges if name == "c" else args.ranges // 10) + 1
            result[name] = {"ns_per_range_no_injection": statistics.median(off),
                            "ns_per_range_injected": statistics.median(on),
                            "added_ns_per_range": statistics.median(on) - statistics.median(off),
                            "rounds_no_injection": off, "rounds_injected": on,
                            "received_share": round(sum(received.values()) / (expected * args.rounds), 4)}
            log(f"FIGURE nvtx {name}: +{result[name]['added_ns_per_range']:.1f} ns per range "
                f"({result[name]['received_share']:.1%} received)")
    finally:
        probe.stop()
    print(write_result(args.out, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
