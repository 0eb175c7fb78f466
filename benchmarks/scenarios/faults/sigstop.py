"""Process freeze: SIGSTOP then SIGCONT to the engine every second, held `hold_ms` (a debugger, a checkpoint
tool, a job controller). Every thread stops, the HTTP server included."""
import os
import signal

from fault import Fault, Pulse, engine_culprit


class SigStop(Fault):
    def start(self, stack, params):
        pid = stack.engine.pid
        self.state["pulse"] = Pulse(lambda: os.kill(pid, signal.SIGSTOP), lambda: os.kill(pid, signal.SIGCONT),
                                    params["hold_ms"] / 1000, 1.0).start()
        return engine_culprit(stack, by_pid=os.getpid())

    def stop(self, stack):
        return self.state.pop("pulse").stop()


FAULT = SigStop("sigstop", "process_frozen", {"low": {"hold_ms": 60}, "high": {"hold_ms": 300}},
                "SIGSTOP/SIGCONT of the engine, held 60 / 300 ms each second")
