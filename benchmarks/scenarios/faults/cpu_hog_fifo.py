"""CPU contention: a SCHED_FIFO hog pinned to the engine's CPU. A real-time task preempts every CFS task, so it
wins the CPU whatever autogroup or nice say; it spins `on_ms` then sleeps `off_ms` (its duty cycle is the
intensity). The CPU it really took is measured from its own CPU time."""
from fault import Fault, actor_culprit

COMM = "hog-fifo"


class CpuHogFifo(Fault):
    def start(self, stack, params):
        cpu = stack.opts.engine_cpus[0]
        self.state["hog"] = stack.actor("spin", "--comm", COMM, "--cpu", str(cpu), "--fifo", "1",
                                        "--on-ms", str(params["on_ms"]), "--off-ms", str(params["off_ms"]))
        return actor_culprit(self.state["hog"], COMM, cpu=cpu)

    def stop(self, stack):
        return {"hog_cpu_share": round(stack.stop_actor(self.state.pop("hog")), 3)}


FAULT = CpuHogFifo("cpu_hog_fifo", "cpu_contention",
                   {"low": {"on_ms": 10, "off_ms": 40}, "high": {"on_ms": 40, "off_ms": 10}},
                   "SCHED_FIFO spinner on the engine's CPU, duty 20 % / 80 %")
