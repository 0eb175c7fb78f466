"""Request burst / head-of-line blocking: `n` extra requests at once on top of the steady load. The engine runs at
most 8 sequences at a time, so the burst and the steady requests behind it queue."""
from fault import Fault, engine_culprit


class Burst(Fault):
    def start(self, stack, params):
        tag, prompt, out = self.shape
        stack.load.burst(params["n"], prompt, out, tag)
        return engine_culprit(stack)

    def stop(self, stack):
        return {}


FAULT = Burst("burst", "queueing", {"low": {"n": 16}, "high": {"n": 48}},
              "16 / 48 requests at once (max 8 running)", shape=("burst", 32, 24))
