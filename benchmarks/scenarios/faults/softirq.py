"""Softirq load on the engine's CPU: a UDP flood into the engine's namespace, with receive packet steering of the
engine-side veth onto the engine's CPU, so NET_RX softirq work runs there (as a NIC's interrupts would) while the
sender itself runs on another CPU. The softirq time the engine's CPU really spent is measured (/proc/stat)."""
import time

import psutil

from fault import Fault, actor_culprit

COMM = "udp-flood"


def _softirq_s(cpu: int) -> float:
    return psutil.cpu_times(percpu=True)[cpu].softirq


class Softirq(Fault):
    def setup(self, stack):
        stack.netns.set_rps(stack.opts.engine_cpus[:1])

    def teardown(self, stack):
        stack.netns.set_rps([])

    def start(self, stack, params):
        cpu, ns = stack.opts.engine_cpus[0], stack.netns
        side = [a for c in stack.opts.side_cpus[:1] for a in ("--cpu", str(c))]
        flood = stack.actor("udpflood", "--comm", COMM, *side, "--dst", ns.engine_addr, "--port", "9",
                            "--pps", str(params["pps"]))
        self.state.update(flood=flood, cpu=cpu, t0=time.monotonic(), s0=_softirq_s(cpu))
        return actor_culprit(flood, COMM, accept=["interface", "pid"], interfaces=[ns.host_if, ns.engine_if],
                             cpu=cpu, vector="NET_RX")

    def stop(self, stack):
        st = self.state
        share = (_softirq_s(st["cpu"]) - st["s0"]) / max(1e-3, time.monotonic() - st["t0"])
        return {"sender_cpu_share": round(stack.stop_actor(st.pop("flood")), 3),
                "engine_cpu_softirq_share": round(share, 3)}


FAULT = Softirq("softirq", "softirq", {"low": {"pps": 100_000}, "high": {"pps": 0}},
                "UDP flood steered (RPS) onto the engine's CPU: 100 kpps / as fast as one sender can",
                needs=("netns",))
