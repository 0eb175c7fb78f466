"""Blocking I/O caused by a neighbour: the engine fsyncs a little on its hot thread all through this scenario
(1 MiB every 32 steps, in its clean windows too), and during the fault another process writes and fsyncs `mb` MiB
again and again on the same filesystem, so the engine's small fsyncs wait behind the storm's."""
from fault import Fault, actor_culprit, post_faults

COMM = "fsync-storm"
LIGHT = {"fsync_mb": 1, "fsync_every_steps": 32}


class FsyncStorm(Fault):
    def setup(self, stack):
        post_faults(stack.url, {**LIGHT, "fsync_dir": stack.loopfs["dir"]})

    def teardown(self, stack):
        post_faults(stack.url, {"fsync_mb": 0})

    def start(self, stack, params):
        side = [a for c in stack.opts.side_cpus[:1] for a in ("--cpu", str(c))]
        self.state["storm"] = stack.actor("fsyncstorm", "--comm", COMM, *side, "--dir", stack.loopfs["dir"],
                                          "--mb", str(params["mb"]))
        return actor_culprit(self.state["storm"], COMM, device=stack.loopfs["majmin"])

    def stop(self, stack):
        return {"storm_cpu_share": round(stack.stop_actor(self.state.pop("storm")), 3)}


FAULT = FsyncStorm("fsync_storm", "blocking_io", {"low": {"mb": 8}, "high": {"mb": 64}},
                   "neighbour write+fsync storm (8 / 64 MiB per fsync) under the engine's light fsyncs",
                   needs=("loopfs", "drill:fsync_mb"))
