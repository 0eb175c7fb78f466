"""GPU clock events, observe only: the suite never changes clocks or power limits, so nothing is injected; NVML's
clock-event reasons of the engine's GPU are sampled through the window, and a window counts only where the GPU
itself reported a slowdown reason (else it is reported as not triggered, not scored as a miss)."""
import threading

from fault import Fault

# nvmlClocksEventReason* bits that mean the clocks were held down (not idle, not app-clock settings)
SLOWDOWN_BITS = {0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x20: "sw_thermal", 0x40: "hw_thermal",
                 0x80: "hw_power_brake"}


class GpuClocks(Fault):
    def start(self, stack, params):
        import pynvml
        pynvml.nvmlInit()
        handle, seen, done = pynvml.nvmlDeviceGetHandleByIndex(0), set(), threading.Event()

        def sample():
            while not done.wait(0.1):
                bits = pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)
                seen.update(name for bit, name in SLOWDOWN_BITS.items() if bits & bit)
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        self.state.update(done=done, thread=thread, seen=seen)
        return {"gpu": 0, "accept": ["gpu"]}

    def stop(self, stack):
        st = self.state
        st["done"].set()
        st["thread"].join(5)
        return {"reasons_seen": sorted(st["seen"]), "triggered": bool(st["seen"])}


FAULT = GpuClocks("gpu_clocks", "gpu_clocks", {"observe": {}}, "observe only: NVML clock-event reasons",
                  needs=("gpu",))
