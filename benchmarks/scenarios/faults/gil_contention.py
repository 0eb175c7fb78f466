"""GIL contention in the engine process, the engine's own drill: `gil_hog_threads` in engine/faults.py, that many
Python threads (comm gs-gil-hog) in the engine spinning in pure Python, so the step thread waits for the GIL (futex
waits with runnable Python threads). They share the engine's CPU, so they take CPU time too. Engines without the
drill (before c2216fc) skip the row."""
from fault import Fault, engine_culprit, post_faults


class GilContention(Fault):
    def start(self, stack, params):
        post_faults(stack.url, {"gil_hog_threads": int(params["threads"])})
        return engine_culprit(stack)

    def stop(self, stack):
        post_faults(stack.url, {"gil_hog_threads": 0})
        return {}


FAULT = GilContention("gil_contention", "gil_contention", {"low": {"threads": 1}, "high": {"threads": 4}},
                      "engine drill: 1 / 4 pure-Python spinning threads", needs=("drill:gil_hog_threads",))
