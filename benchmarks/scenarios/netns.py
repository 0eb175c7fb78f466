"""The engine's own network namespace behind a veth pair, as a container has: the load generator, the agent and
the bulk sink stay in the host namespace; the engine serves on the namespace side. Network faults shape that veth.

Host side `gsh<N>` (10.79.<N>.1), engine side `gse<N>` (10.79.<N>.2) in namespace `gs-scn-<N>`; iproute2 does the
work (pyroute2 would do too, but the faults also need `tc` and `ip netns exec`, so one tool for all).
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


def sh(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, output captured; CalledProcessError (with its stderr) on failure when `check`."""
    out = subprocess.run(cmd, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise subprocess.CalledProcessError(out.returncode, cmd, out.stdout, out.stderr)
    return out


@dataclass
class EngineNetns:
    """A namespace with one veth to the host; `create()` then `delete()` (idempotent)."""

    num: int

    @property
    def name(self) -> str:
        return f"gs-scn-{self.num}"

    @property
    def host_if(self) -> str:
        return f"gsh{self.num}"

    @property
    def engine_if(self) -> str:
        return f"gse{self.num}"

    @property
    def host_addr(self) -> str:
        return f"10.79.{self.num}.1"

    @property
    def engine_addr(self) -> str:
        return f"10.79.{self.num}.2"

    def create(self) -> "EngineNetns":
        self.delete()
        sh(["ip", "netns", "add", self.name])
        sh(["ip", "-n", self.name, "link", "set", "lo", "up"])
        sh(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.engine_if, "netns", self.name])
        sh(["ip", "addr", "add", f"{self.host_addr}/24", "dev", self.host_if])
        sh(["ip", "-n", self.name, "addr", "add", f"{self.engine_addr}/24", "dev", self.engine_if])
        sh(["ip", "link", "set", self.host_if, "up"])
        sh(["ip", "-n", self.name, "link", "set", self.engine_if, "up"])
        return self

    def exec_prefix(self) -> list[str]:
        """Prefix a command line with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
        return sh(self.exec_prefix() + cmd, check)

    def set_rps(self, cpus: list[int]) -> None:
        """Receive packet steering of the engine-side veth onto `cpus` (its NET_RX softirq runs there)."""
        mask = format(sum(1 << c for c in cpus), "x")
        self.run(["sh", "-c", f"echo {mask} > /sys/class/net/{self.engine_if}/queues/rx-0/rps_cpus"])

    def shape(self, rate_kbit: int, burst_bytes: int = 4000, latency_ms: int = 200) -> None:
        """tbf on the engine side's egress: the engine's responses (and anything it sends) leave at `rate_kbit`."""
        self.run(["tc", "qdisc", "replace", "dev", self.engine_if, "root", "tbf", "rate", f"{rate_kbit}kbit",
                  "burst", str(burst_bytes), "latency", f"{latency_ms}ms"])

    def unshape(self) -> None:
        self.run(["tc", "qdisc", "del", "dev", self.engine_if, "root"], check=False)

    def delete(self) -> None:
        """Remove the namespace (and with it the veth pair); no error if absent."""
        sh(["ip", "netns", "del", self.name], check=False)
        sh(["ip", "link", "del", self.host_if], check=False)


def for_this_run() -> EngineNetns:
    """A namespace numbered after this process, so concurrent runs on one host do not collide."""
    return EngineNetns(os.getpid() % 250 + 1)
