"""Blocking I/O on the engine's hot thread, the engine's own drill: its scheduler thread writes `mb` MiB and
fsyncs them every `every` steps (engine/faults.py fsync_mb), on the suite's loop-device filesystem."""
from fault import Fault, engine_culprit, post_faults


class FsyncDrill(Fault):
    def start(self, stack, params):
        post_faults(stack.url, {"fsync_mb": params["mb"], "fsync_every_steps": params["every"],
                                "fsync_dir": stack.loopfs["dir"]})
        return engine_culprit(stack, device=stack.loopfs["majmin"])

    def stop(self, stack):
        post_faults(stack.url, {"fsync_mb": 0})
        return {}


FAULT = FsyncDrill("fsync_drill", "blocking_io", {"low": {"mb": 1, "every": 8}, "high": {"mb": 4, "every": 4}},
                   "engine drill: write+fsync 1 MiB every 8 steps / 4 MiB every 4 steps",
                   needs=("loopfs", "drill:fsync_mb"))
