"""CPU contention through the fair scheduler: an always-busy hog pinned to the engine's CPU, in a sibling cgroup
of the engine's whose CPU weight is the intensity (equal weight, then 10x). cgroups decide the split, so autogroup
(which only groups tasks of the root cgroup) plays no part."""
import cgroups
from fault import Fault, actor_culprit

COMM = "hog-weight"


class CpuHogWeight(Fault):
    def setup(self, stack):
        self.state["cg"] = cgroups.Group(f"gs-scn-{stack.num}/hog").create()

    def teardown(self, stack):
        self.state.pop("cg").remove()

    def start(self, stack, params):
        cg, cpu = self.state["cg"], stack.opts.engine_cpus[0]
        cg.set_cpu_weight(params["weight"])
        hog = stack.actor("spin", "--comm", COMM, "--cpu", str(cpu), "--off-ms", "0")
        cg.add(hog.pid)
        self.state["hog"] = hog
        return actor_culprit(hog, COMM, cpu=cpu, cgroup=cg.path)

    def stop(self, stack):
        return {"hog_cpu_share": round(stack.stop_actor(self.state.pop("hog")), 3)}


FAULT = CpuHogWeight("cpu_hog_weight", "cpu_contention", {"low": {"weight": 100}, "high": {"weight": 1000}},
                     "always-busy hog on the engine's CPU, cgroup weight 1x / 10x the engine's", needs=("cgroup",))
