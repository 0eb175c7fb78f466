"""Network namespaces joined by a veth pair, and traffic roles run inside them: a testbed for checking the network
probe against traffic of known size and timing (the tests and benchmarks/bench_net_*.py use it).

`VethPair` creates two namespaces (`<tag>a`, `<tag>b`) with veth `<tag>0` (10.77.0.1, in a) and `<tag>1`
(10.77.0.2, in b) and deletes both on exit; all traffic stays inside them. The roles (traffic.py) run inside a
namespace with `ip netns exec` and print one JSON line when done. Needs root and iproute2.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

PYTHON = sys.executable
TRAFFIC = "gpusleuth.probes.net.traffic"  # the roles' module, run with `python -m`
ADDR_A, ADDR_B = "10.77.0.1", "10.77.0.2"
TCP_PORT, UDP_PORT, UDP_BURST_PORT = 5201, 5202, 5203


def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a shell command, output captured; CalledProcessError on failure when `check`."""
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def role_args(role: str, *args: str) -> list[str]:
    """The command line of traffic role `role` (sink, background, bursts, bulk, hold_probe) in this namespace."""
    return [PYTHON, "-m", TRAFFIC, role, *args]


@dataclass
class VethPair:
    """Two namespaces joined by a veth pair; side a sends, side b receives."""

    tag: str

    @property
    def ns_a(self) -> str:
        return f"{self.tag}a"

    @property
    def ns_b(self) -> str:
        return f"{self.tag}b"

    @property
    def if_a(self) -> str:
        return f"{self.tag}0"

    @property
    def if_b(self) -> str:
        return f"{self.tag}1"

    def create(self) -> None:
        """Make both namespaces and the veth pair, tuned so bursts leave at once (deletes leftovers first)."""
        self.delete()
        for ns in (self.ns_a, self.ns_b):
            sh(f"ip netns add {ns}")
            sh(f"ip -n {ns} link set lo up")
            # No IPv6 autoconfiguration chatter: the counters tests compare exact packet counts.
            sh(f"ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
            # Bursts must leave at once after 200 ms of idle: no cwnd restart after idle.
            sh(f"ip netns exec {ns} sysctl -qw net.ipv4.tcp_slow_start_after_idle=0")
            # cubic, not a pacing congestion control (bbr): the burst must leave as fast as the stack can send.
            sh(f"ip netns exec {ns} sysctl -qw net.ipv4.tcp_congestion_control=cubic", check=False)
        sh(f"ip link add {self.if_a} netns {self.ns_a} type veth peer name {self.if_b} netns {self.ns_b}")
        sh(f"ip -n {self.ns_a} addr add {ADDR_A}/24 dev {self.if_a}")
        sh(f"ip -n {self.ns_b} addr add {ADDR_B}/24 dev {self.if_b}")
        sh(f"ip -n {self.ns_a} link set {self.if_a} up")
        sh(f"ip -n {self.ns_b} link set {self.if_b} up")
        # A window big enough for a whole burst from the first write (a burst must not wait for ACKs).
        sh(f"ip -n {self.ns_a} route replace 10.77.0.0/24 dev {self.if_a} initcwnd 2048 initrwnd 2048")
        sh(f"ip -n {self.ns_b} route replace 10.77.0.0/24 dev {self.if_b} initcwnd 2048 initrwnd 2048")

    def delete(self) -> None:
        """Delete both namespaces (and with them the veth pair); no error if absent."""
        for ns in (self.ns_a, self.ns_b):
            sh(f"ip netns del {ns}", check=False)

    def exec_args(self, ns: str, role: str, *args: str) -> list[str]:
        """The command line of traffic role `role` run inside namespace `ns`."""
        return ["ip", "netns", "exec", ns, *role_args(role, *args)]

    def spawn(self, ns: str, role: str, *args: str) -> subprocess.Popen:
        """Start traffic role `role` inside `ns`, stdin/stdout/stderr piped (wait_line reads its result)."""
        return subprocess.Popen(self.exec_args(ns, role, *args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def link_stats(self, ns: str, ifname: str) -> dict[str, int]:
        """The kernel's own interface counters (what `ip -s link` prints)."""
        out = json.loads(sh(f"ip -n {ns} -s -j link show dev {ifname}").stdout)[0]["stats64"]
        return {"rx_bytes": out["rx"]["bytes"], "rx_packets": out["rx"]["packets"],
                "tx_bytes": out["tx"]["bytes"], "tx_packets": out["tx"]["packets"]}

    def snmp(self, ns: str) -> dict[str, int]:
        """`Tcp:` counters of /proc/net/snmp inside `ns` (RetransSegs, OutSegs, ...)."""
        lines = [ln.split() for ln in sh(f"ip netns exec {ns} cat /proc/net/snmp").stdout.splitlines()
                 if ln.startswith("Tcp:")]
        return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}


@contextmanager
def veth_pair(tag: str | None = None) -> Iterator[VethPair]:
    """A created VethPair (tag unique to this process unless given), deleted on exit."""
    pair = VethPair(tag or f"gs{os.getpid() % 100000}")
    pair.create()
    try:
        yield pair
    finally:
        pair.delete()


def wait_line(proc: subprocess.Popen, timeout_s: float = 30.0) -> dict:
    """Wait for a role to finish and return its JSON line (raises with its stderr if it failed)."""
    out, err = proc.communicate(timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"role failed rc={proc.returncode}: {err.strip()[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])
