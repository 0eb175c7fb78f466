"""Blocking I/O on a throttled block device: the engine fsyncs a little on its hot thread all through this
scenario (1 MiB every 32 steps), and during the fault its cgroup's writes to that device are limited (v1
blkio.throttle.write_bps_device, v2 io.max wbps), so each fsync waits for the throttle."""
from fault import Fault, engine_culprit, post_faults
from faults.fsync_storm import LIGHT


class IoThrottle(Fault):
    def setup(self, stack):
        post_faults(stack.url, {**LIGHT, "fsync_dir": stack.loopfs["dir"]})

    def teardown(self, stack):
        post_faults(stack.url, {"fsync_mb": 0})

    def start(self, stack, params):
        stack.cg_engine.set_write_bps(stack.loopfs["majmin"], params["mb_s"] << 20)
        return engine_culprit(stack, device=stack.loopfs["majmin"])

    def stop(self, stack):
        stack.cg_engine.set_write_bps(stack.loopfs["majmin"], None)
        return {}


FAULT = IoThrottle("io_throttle", "blocking_io", {"low": {"mb_s": 6}, "high": {"mb_s": 2}},
                   "engine cgroup's writes to its disk limited to 6 / 2 MiB/s under its light fsyncs",
                   needs=("cgroup", "loopfs", "drill:fsync_mb"))
