"""Python garbage collections of the engine process as "gc" spans (diagnosis contract §1), from `gc.callbacks`.

A collection runs on whichever thread's allocation triggered it (holding the GIL: every other Python thread waits),
so the callback only appends to a deque, which is safe from any thread and needs no lock that a collection could
re-enter. Each SpanEmitter given the watch drains it when it flushes: the step thread after each step or idle
wait, the server thread with each heartbeat, so a collection reaches the agent within about 0.5 s even while the
step loop is stuck.
"""
from __future__ import annotations

import gc
import threading
import time
from collections import deque
from typing import NamedTuple


class GcRecord(NamedTuple):
    start_ns: int
    end_ns: int
    tid: int  # native id of the thread that ran the collection
    generation: int
    collected: int


class GcWatch:
    """Records every collection while installed (a context manager); at most `maxlen` wait to be sent."""

    def __init__(self, maxlen: int = 4096) -> None:
        self.pending: deque[GcRecord] = deque(maxlen=maxlen)
        self._start_ns = 0  # collections never overlap: one runs at a time, under the GIL

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start_ns = time.monotonic_ns()
            return
        self.pending.append(GcRecord(self._start_ns, time.monotonic_ns(), threading.get_native_id(),
                                     info["generation"], info["collected"]))

    def install(self) -> "GcWatch":
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        return self

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def __enter__(self) -> "GcWatch":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()

    def drain(self) -> list[GcRecord]:
        """Collections not yet taken (each is handed out once, whichever thread asks)."""
        out = []
        while self.pending:
            try:
                out.append(self.pending.popleft())
            except IndexError:  # another thread took the last one meanwhile
                break
        return out
