"""Bulk traffic on the engine's own interface: the engine's egress is a 20 Mbit/s link (tbf, in this scenario's
clean windows too) and during the fault a bulk TCP flow from the engine's namespace (a log shipper, a checkpoint
upload) fills it, so the engine's responses queue behind it."""
from fault import Fault, actor_culprit

COMM, PORT, LINK_KBIT = "bulk-tx", 5301, 20_000


class NetBulk(Fault):
    def setup(self, stack):
        ns, side = stack.netns, [a for c in stack.opts.side_cpus[:1] for a in ("--cpu", str(c))]
        ns.shape(LINK_KBIT, burst_bytes=16000)
        self.state["sink"] = stack.actor("sink", "--comm", "bulk-sink", *side, "--dst", ns.host_addr,
                                         "--port", str(PORT))

    def teardown(self, stack):
        stack.stop_actor(self.state.pop("sink"))
        stack.netns.unshape()

    def start(self, stack, params):
        ns, side = stack.netns, [a for c in stack.opts.side_cpus[:1] for a in ("--cpu", str(c))]
        bulk = stack.actor("bulk", "--comm", COMM, *side, "--dst", ns.host_addr, "--port", str(PORT),
                           "--mbps", str(params["mbps"]), in_netns=True)
        self.state["bulk"] = bulk
        return actor_culprit(bulk, COMM, accept=["interface", "pid"], interfaces=[ns.host_if, ns.engine_if])

    def stop(self, stack):
        return {"bulk_cpu_share": round(stack.stop_actor(self.state.pop("bulk")), 3)}


FAULT = NetBulk("net_bulk", "network", {"low": {"mbps": 18}, "high": {"mbps": 0}},
                "bulk TCP flow on the engine's 20 Mbit/s egress: 18 Mbit/s / unpaced", needs=("netns",))
