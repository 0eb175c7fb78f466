"""Cost of the network probe on the data path: bulk TCP across a veth pair with and without our programs (issue 3).

One run, interleaved rounds so drift on a shared machine hits every mode alike. Modes:
  off     nothing of ours attached
  tc      our tc clsact programs on both hooks of the sender's veth (bins + hot flows)
  tc+tcp  the same plus the TCP tracer (retransmit/drop/socket-owner tracepoints)
Reported: median Gb/s per mode and the loss against `off` (target <= 3 %), and the programs' own cost per packet
from the kernel's BPF run-time statistics (kernel.bpf_stats_enabled, restored afterwards): run_time_ns / run_cnt
of each tc program under the bulk load, and in isolation (BPF_PROG_TEST_RUN on one frame, minus an empty program). A "packet" at the tc hook is an skb, which on veth is usually a 64 KB GSO super-packet; the
small-packet round (--small) floods 64-byte UDP datagrams to give the per-packet cost where skbs are small.
Run as root:  .venv/bin/python benchmarks/bench_net_overhead.py [--rounds 9 --seconds 2]   (~2.5 min)
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import write_result
from gpusleuth.probes.net.probe import NetConfig, NetProbe
from gpusleuth.probes.net.testbed import veth_pair, wait_line

HERE = Path(__file__).parent


def device_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"cpu: {line.split(':', 1)[1].strip()} x{len(__import__('os').sched_getaffinity(0))}"
    return platform.machine()


def prog_stats(name: str) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over loaded programs called `name` (bpftool)."""
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                                      check=True).stdout)
    mine = [p for p in progs if p.get("name") == name]
    return sum(p.get("run_time_ns", 0) for p in mine), sum(p.get("run_cnt", 0) for p in mine)


class Modes:
    """Switches between off / tc / tc+tcp without recompiling the tc programs each round."""

    def __init__(self, pair, state_dir: str) -> None:
        self.probe = NetProbe(NetConfig(netns=pair.ns_a, interfaces=[pair.if_a], state_dir=state_dir,
                                        is_tcp_enabled=False))
        self.probe.start()
        self.run = self.probe._run  # the benchmark reaches in to attach/detach filters only
        self.link = self.run.links[0]
        self.tcp = None
        self.run.attacher.detach(self.link.name)

    def set(self, mode: str) -> None:
        from gpusleuth.probes.net.tcp import TcpTracer  # noqa: PLC0415
        attached = self.link.name in self.run.attacher.state
        if mode == "off" and attached:
            self.run.attacher.detach(self.link.name)
        if mode != "off" and not attached:
            self.run.attacher.attach(self.link, self.run.tc.fds)
        if mode == "tc+tcp" and self.tcp is None:
            self.tcp = TcpTracer(64)
            self.tcp.start()
        if mode != "tc+tcp" and self.tcp is not None:
            self.tcp.stop()
            self.tcp = None

    def close(self) -> None:
        self.set("off")
        self.probe.stop()


def _test_run(fd: int, data: bytes, repeat: int) -> int:
    """Average ns per run of a SCHED_CLS program over `repeat` runs on `data` (BPF_PROG_TEST_RUN, x86_64)."""
    import ctypes  # noqa: PLC0415
    import struct  # noqa: PLC0415
    libc = ctypes.CDLL(None, use_errno=True)
    buf, out = ctypes.create_string_buffer(data), ctypes.create_string_buffer(len(data) + 256)
    attr = ctypes.create_string_buffer(80)  # prog_fd, retval, size_in, size_out, data_in, data_out, repeat, duration
    struct.pack_into("<IIIIQQII", attr, 0, fd, 0, len(data), len(out), ctypes.addressof(buf),
                     ctypes.addressof(out), repeat, 0)
    if libc.syscall(321, 10, attr, 80) != 0:
        raise OSError(ctypes.get_errno(), "BPF_PROG_TEST_RUN")
    return struct.unpack_from("<I", attr, 36)[0]


def isolated_ns(repeat: int = 2_000_000) -> dict[str, float]:
    """The tc program alone on a 114-byte UDP frame, against an empty program (the test-run harness itself)."""
    from bcc import BPF  # noqa: PLC0415
    from gpusleuth.probes.net.tc import RingLayout, TcPrograms  # noqa: PLC0415
    frame = (b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + bytes([0x45, 0, 0, 100, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1,
                                                               10, 0, 0, 2]) + b"\x04\xd2\x16\x2e" + b"x" * 76)
    noop = BPF(text="#include <uapi/linux/pkt_cls.h>\nint noop(struct __sk_buff *s) { return TC_ACT_UNSPEC; }")
    tc = TcPrograms(RingLayout.for_config(100, 2.0, 1))
    tc.load()
    try:
        out = {"empty_program": min(_test_run(noop.load_func("noop", BPF.SCHED_CLS).fd, frame, repeat)
                                    for _ in range(3))}
        for label, threshold in (("cold_bin", 1 << 40), ("hot_bin_sampled", 62_500), ("hot_bin_every_packet", 1)):
            tc.set_iface(1, 0, 14, threshold)  # test runs come from lo (ifindex 1)
            out[label] = min(_test_run(tc.fds["egress"], frame, repeat) for _ in range(3))
    finally:
        tc.close()
        noop.cleanup()
    return out


def bulk_gbps(pair, seconds: float) -> float:
    return wait_line(pair.spawn(pair.ns_a, "bulk", "--seconds", str(seconds)), seconds + 60)["gbps"]


def small_pps(pair, seconds: float) -> float:
    code = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nb=b'x'*22\nn=0\n"
            f"t=time.monotonic()\nwhile time.monotonic()-t<{seconds}:\n"
            "  for _ in range(1000): s.sendto(b,('10.77.0.2',5202))\n  n+=1000\n"
            "print(n/(time.monotonic()-t))")
    out = subprocess.run(["ip", "netns", "exec", pair.ns_a, sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout
    return float(out.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--out", default=str(HERE / "results" / "net_overhead.json"))
    args = ap.parse_args()
    modes = ["off", "tc", "tc+tcp"]
    gbps: dict[str, list[float]] = {m: [] for m in modes}
    pps: dict[str, list[float]] = {m: [] for m in ("off", "tc")}
    stats_was = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1")
    try:
        with veth_pair("gsbo") as pair, tempfile.TemporaryDirectory() as state:
            sink = pair.spawn(pair.ns_b, "sink")
            sink.stdout.readline()
            sw = Modes(pair, state)
            try:
                before = {d: prog_stats(f"gs_net_{d}") for d in ("ingress", "egress")}
                for r in range(args.rounds):
                    for mode in modes[r % 3:] + modes[:r % 3]:  # rotate the order every round
                        sw.set(mode)
                        gbps[mode].append(bulk_gbps(pair, args.seconds))
                        print(f"round {r} {mode:7s} {gbps[mode][-1]:.2f} Gb/s", flush=True)
                    for mode in (("off", "tc") if r % 2 == 0 else ("tc", "off")):
                        sw.set(mode)
                        pps[mode].append(small_pps(pair, 1.0))
                        print(f"round {r} small {mode:4s} {pps[mode][-1] / 1e3:.0f} kpps", flush=True)
                    sw.run.poll(time.monotonic_ns())  # drain like the agent would (the rings must not overrun)
                after = {d: prog_stats(f"gs_net_{d}") for d in ("ingress", "egress")}
            finally:
                sw.close()
                sink.kill()
    finally:
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text(stats_was)
    isolated = isolated_ns()
    print("isolated ns/run", isolated, flush=True)
    med = {m: statistics.median(v) for m, v in gbps.items()}
    ns_per_pkt = {d: (after[d][0] - before[d][0]) / max(1, after[d][1] - before[d][1]) for d in after}
    result = {
        "benchmark": "net_overhead", "device": device_name(), "kernel": platform.release(),
        "rounds": args.rounds, "seconds_per_round": args.seconds,
        "bulk_tcp_gbps": gbps, "median_gbps": med,
        "loss_pct_vs_off": {m: 100 * (1 - med[m] / med["off"]) for m in modes if m != "off"},
        # Paired within each round (modes ran back to back), which cancels slow drift of a shared machine.
        "paired_loss_pct_median": {m: 100 * (1 - statistics.median(a / b for a, b in zip(gbps[m], gbps["off"])))
                                   for m in modes if m != "off"},
        "small_udp_pps": pps,
        "small_loss_pct": 100 * (1 - statistics.median(pps["tc"]) / statistics.median(pps["off"])),
        "bpf_ns_per_packet": ns_per_pkt, "bpf_packets": {d: after[d][1] - before[d][1] for d in after},
        # CPU our tc programs used while attached (bulk rounds in tc and tc+tcp modes, plus small-packet rounds),
        # as a share of one core: the direct cost, immune to the throughput noise of a shared machine.
        "tc_program_cpu_pct_of_one_core": 100 * sum(after[d][0] - before[d][0] for d in after) / 1e9 / max(
            1e-9, args.rounds * (2 * args.seconds + 1.0)),
        "isolated_ns_per_run": isolated,
        "added_ns_per_packet_isolated": {k: v - isolated["empty_program"] for k, v in isolated.items()
                                         if k != "empty_program"},
        "target": "throughput loss <= 3 %",
    }
    write_result(args.out, result)
    print(json.dumps({k: result[k] for k in ("median_gbps", "loss_pct_vs_off", "paired_loss_pct_median",
                                             "small_loss_pct", "tc_program_cpu_pct_of_one_core",
                                             "bpf_ns_per_packet", "added_ns_per_packet_isolated")}, indent=2))


if __name__ == "__main__":
    main()
