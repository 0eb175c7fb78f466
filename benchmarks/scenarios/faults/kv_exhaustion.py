"""KV-cache exhaustion: `n` long requests at once (256 prompt + 256 output tokens, 32 KV blocks each) against an
engine with 96 KV blocks, so prefills wait for blocks and running decodes are preempted (recomputed later)."""
from fault import Fault, engine_culprit


class KvExhaustion(Fault):
    def start(self, stack, params):
        tag, prompt, out = self.shape
        stack.load.burst(params["n"], prompt, out, tag)
        return engine_culprit(stack)

    def stop(self, stack):
        return {}


FAULT = KvExhaustion("kv_exhaustion", "queueing", {"low": {"n": 6}, "high": {"n": 12}},
                     "6 / 12 long requests at once against 96 KV blocks (preemptions)", shape=("kv", 256, 256))
