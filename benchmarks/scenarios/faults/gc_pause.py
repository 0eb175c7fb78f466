"""Python GC pauses in the engine process, the engine's own drill (a GC pause cannot be caused from outside a
Python process without a debugger): `gc_pause_ms` in engine/faults.py, a real full collection of about that long
every `gc_every_steps` (10) steps on the step thread. Engines without the drill (before c2216fc) skip the row."""
from fault import Fault, engine_culprit, post_faults


class GcPause(Fault):
    def start(self, stack, params):
        post_faults(stack.url, {"gc_pause_ms": float(params["ms"])})
        return engine_culprit(stack)

    def stop(self, stack):
        post_faults(stack.url, {"gc_pause_ms": 0.0})
        return {}


FAULT = GcPause("gc_pause", "gc_pause", {"low": {"ms": 10}, "high": {"ms": 50}},
                "engine drill: full GC of ~10 / 50 ms every 10 steps", needs=("drill:gc_pause_ms",))
