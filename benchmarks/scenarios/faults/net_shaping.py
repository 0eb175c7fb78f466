"""Network shaping on the engine's own interface: tbf on the engine side of its veth limits what the engine sends
(its streamed responses) to `kbit`, with 200 ms of queue, as a congested or policed uplink would."""
from fault import Fault


class NetShaping(Fault):
    def start(self, stack, params):
        ns = stack.netns
        ns.shape(params["kbit"], burst_bytes=3000)
        return {"interfaces": [ns.host_if, ns.engine_if], "accept": ["interface"], "rate_kbit": params["kbit"]}

    def stop(self, stack):
        stack.netns.unshape()
        return {}


FAULT = NetShaping("net_shaping", "network", {"low": {"kbit": 600}, "high": {"kbit": 250}},
                   "tbf on the engine's egress: 600 / 250 kbit/s", needs=("netns",))
