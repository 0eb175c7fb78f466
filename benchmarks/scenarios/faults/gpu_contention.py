"""GPU contention: another process running bf16 GEMMs on the engine's GPU (GPU hosts only)."""
from fault import Fault, actor_culprit

COMM = "gemm-hog"


class GpuContention(Fault):
    def start(self, stack, params):
        gemm = stack.actor("gemm", "--comm", COMM, "--device", "cuda:0", "--size", str(params["size"]),
                           python=stack.opts.tools.python)
        self.state["gemm"] = gemm
        return actor_culprit(gemm, COMM, gpu=0, accept=["pid"])

    def stop(self, stack):
        return {"gemm_cpu_share": round(stack.stop_actor(self.state.pop("gemm")), 3)}


FAULT = GpuContention("gpu_contention", "gpu_contention", {"low": {"size": 2048}, "high": {"size": 8192}},
                      "bf16 GEMM loop of 2048^2 / 8192^2 on the engine's GPU", needs=("gpu",))
