"""What a scenario is: one fault with its ground-truth cause, its intensities, and how to inject and lift it.

Each module in faults/ defines `FAULT`, an instance of a Fault subclass. `start(stack, params)` injects the fault
and returns the ground-truth culprit; `stop(stack)` lifts it and returns what was measured about the injection
itself (CPU a hog took, how long the engine was stopped). Culprit identities a verdict may name to be right are
listed in `accept` (a pid, an interface, a rank, a GPU), never a comm alone.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Fault:
    name: str
    cause: str | None  # a cause of the diagnosis contract; None for the clean window
    levels: dict[str, dict[str, Any]]  # intensity name -> parameters
    summary: str = ""
    engine: str = "default"  # which engine setup the scenario needs ("default", "tp2")
    needs: tuple[str, ...] = ()  # "cgroup", "netns", "loopfs", "gpu", "tp2", "drill:<fault key>"
    shape: tuple[str, int, int] | None = None  # (tag, prompt, output tokens) of the requests it sends itself
    state: dict[str, Any] = field(default_factory=dict)

    def skip_reason(self, stack) -> str | None:
        """Why this scenario cannot run with `stack` (None: it can)."""
        return stack.lacks(self.needs)

    def setup(self, stack) -> None:
        """Before the scenario's first clean gap: conditions that hold in its clean windows too."""

    def teardown(self, stack) -> None:
        """After its last window."""

    def start(self, stack, params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def stop(self, stack) -> dict[str, Any]:
        raise NotImplementedError


def engine_culprit(stack, **extra) -> dict[str, Any]:
    """The engine process itself as the culprit (frozen, throttled, stalled, reclaiming, queueing)."""
    return {"pid": stack.engine.pid, "pids": [stack.engine.pid], "comm": stack.engine.comm(),
            "cgroup": stack.engine_cgroup_path(), "accept": ["pid"], **extra}


def actor_culprit(actor, comm: str, **extra) -> dict[str, Any]:
    """A process the fault started (a hog, a storm, a bulk sender) as the culprit."""
    return {"pid": actor.pid, "pids": [actor.pid], "comm": comm, "accept": ["pid"], **extra}


def post_faults(url: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Set the engine's own drills at run time (POST /debug/faults); returns the engine's new settings."""
    req = urllib.request.Request(url + "/debug/faults", data=json.dumps(settings).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def engine_fault_keys(url: str) -> set[str]:
    """The drills this engine has (GET /debug/faults)."""
    with urllib.request.urlopen(url + "/debug/faults", timeout=10) as resp:
        return set(json.loads(resp.read()))


class Pulse:
    """Runs `on()` then, `hold_s` later, `off()`, every `period_s`, on its own thread until stopped; records the
    real length of each pulse. Used by the freeze faults (SIGSTOP, cgroup freezer)."""

    def __init__(self, on: Callable[[], None], off: Callable[[], None], hold_s: float, period_s: float) -> None:
        self.on, self.off, self.hold_s, self.period_s = on, off, hold_s, period_s
        self.held_ns: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Pulse":
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        n = 0
        while not self._stop.is_set():
            t = time.monotonic_ns()
            self.on()
            try:
                self._stop.wait(self.hold_s)  # stopping early still ends the pulse with off()
            finally:
                self.off()
                self.held_ns.append(time.monotonic_ns() - t)
            n += 1
            self._stop.wait(max(0.0, t0 + n * self.period_s - time.monotonic()))

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=10)
        return {"pulses": len(self.held_ns), "held_ms": round(sum(self.held_ns) / 1e6, 1)}
