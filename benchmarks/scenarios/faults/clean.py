"""No fault: a window of the same load with nothing injected. Every request in it is clean (false alarms)."""
from fault import Fault


class Clean(Fault):
    def start(self, stack, params):
        return {}

    def stop(self, stack):
        return {}


FAULT = Clean("clean", None, {"none": {}}, "nothing injected")
