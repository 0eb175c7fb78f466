"""GIL contention in the engine process. Needs an engine drill: `gil_hog_threads` in engine/faults.py, that many
Python threads in the engine spinning in pure Python, so the step thread waits for the GIL (futex waits with
runnable Python threads). Skipped until it exists."""
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
