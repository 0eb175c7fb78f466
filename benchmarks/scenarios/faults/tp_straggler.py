"""A straggling tensor-parallel rank, the engine's own drill: with TP=2 (gloo on CPU, NCCL on GPU), rank 1 waits
`ms` before the first all-reduce of every step (engine/faults.py allreduce_delay_ms), so rank 0 waits in the
collective. The culprit is rank 1 (its process, as the agent's span senders name it). Both ranks share the engine's
CPU here, so rank 0 computes while rank 1 sleeps: only the part of the delay beyond rank 0's own work shows."""
from agentq import AgentQuery
from fault import Fault, post_faults


class TpStraggler(Fault):
    def start(self, stack, params):
        post_faults(stack.url, {"rank": 1, "allreduce_delay_ms": float(params["ms"])})
        ranks = AgentQuery(stack.agent.client).sender_ranks()
        pids = [pid for pid, r in ranks.items() if 1 in r]
        return {"rank": 1, "pids": pids, "pid": pids[0] if pids else None, "accept": ["rank", "pid"]}

    def stop(self, stack):
        post_faults(stack.url, {"allreduce_delay_ms": 0.0})
        return {}


FAULT = TpStraggler("tp_straggler", "tp_straggler", {"low": {"ms": 15}, "high": {"ms": 50}},
                    "engine drill, TP=2: rank 1 late to every step's all-reduce by 15 / 50 ms", engine="tp2",
                    needs=("tp2", "drill:allreduce_delay_ms"))
