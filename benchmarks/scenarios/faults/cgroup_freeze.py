"""Process freeze through the cgroup freezer (v1 freezer.state, v2 cgroup.freeze), as container runtimes pause
a container: the engine's cgroup frozen `hold_ms` every second."""
from fault import Fault, Pulse, engine_culprit


class CgroupFreeze(Fault):
    def start(self, stack, params):
        cg = stack.cg_engine
        self.state["pulse"] = Pulse(lambda: cg.freeze(True), lambda: cg.freeze(False), params["hold_ms"] / 1000,
                                    1.0).start()
        return engine_culprit(stack)

    def stop(self, stack):
        return self.state.pop("pulse").stop()


FAULT = CgroupFreeze("cgroup_freeze", "process_frozen", {"low": {"hold_ms": 60}, "high": {"hold_ms": 300}},
                     "engine cgroup frozen 60 / 300 ms each second", needs=("cgroup",))
