"""A stalled scheduler loop, the engine's own drill: its step thread sleeps `ms` every step
(engine/faults.py scheduler_sleep_ms), so requests crawl while the thread looks idle."""
from fault import Fault, engine_culprit, post_faults


class SchedulerSleep(Fault):
    def start(self, stack, params):
        post_faults(stack.url, {"scheduler_sleep_ms": float(params["ms"])})
        return engine_culprit(stack)

    def stop(self, stack):
        post_faults(stack.url, {"scheduler_sleep_ms": 0.0})
        return {}


FAULT = SchedulerSleep("scheduler_sleep", "engine_stall", {"low": {"ms": 5}, "high": {"ms": 30}},
                       "engine drill: step thread sleeps 5 / 30 ms every step", needs=("drill:scheduler_sleep_ms",))
