"""CPU quota throttling: the engine's cgroup limited to a fraction of one CPU per 100 ms period (v1
cpu.cfs_quota_us, v2 cpu.max). Once the quota is spent the engine waits for the next period with its CPU idle.
The throttling the kernel counted is recorded from the group's cpu.stat."""
from fault import Fault, engine_culprit


class CpuQuota(Fault):
    def start(self, stack, params):
        cg = stack.cg_engine
        self.state["before"] = cg.cpu_stat()
        cg.set_cpu_quota(params["cpus"])
        return engine_culprit(stack)

    def stop(self, stack):
        cg = stack.cg_engine
        cg.set_cpu_quota(None)
        after, before = cg.cpu_stat(), self.state.pop("before")
        return {"nr_throttled": after["nr_throttled"] - before["nr_throttled"],
                "throttled_ms": round((after["throttled_ns"] - before["throttled_ns"]) / 1e6, 1)}


FAULT = CpuQuota("cpu_quota", "cgroup_throttling", {"low": {"cpus": 0.3}, "high": {"cpus": 0.1}},
                 "engine cgroup CPU quota 30 % / 10 % of one CPU (100 ms period)", needs=("cgroup",))
