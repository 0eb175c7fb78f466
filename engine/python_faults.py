"""Drills of the Python runtime inside the engine process (faults.py lists them): real garbage-collection pauses
and real GIL contention, not sleeps, so the evidence the agent sees (gc spans, futex waits of the step thread with
runnable Python threads) is the evidence of the real thing.
"""
from __future__ import annotations

import gc
import threading
import time

from gpusleuth.probes import procname

NS_PER_OBJECT_GUESS = 25  # a full collection's cost per live tracked object on CPython 3.11 (measured: 24-30 ns)
MAX_BALLAST = 60_000_000  # ~4 GiB of empty lists: what a 1 s pause needs on a slow host


class GcPause:
    """`collect()` runs a full (generation 2) collection of about `pause_ms`: a full collection walks every live
    tracked object, so a ballast of live empty lists makes it that long. The ballast is sized by timing collections
    in this process when the pause is set (the shortest of three timings, corrected up to three times: setting it
    takes 4 to 10 pauses); a batch of fresh reference cycles gives each collection garbage to collect. While it is
    on, the objects the process had before are frozen (gc.freeze, as servers do after start-up): a tiny engine's own
    heap alone costs ~50 ms per full collection on a loaded 2-core box, longer than the pauses the fault suite
    asks for."""

    def __init__(self) -> None:
        self.pause_ms = 0.0
        self._ballast: list[list] = []

    def set(self, pause_ms: float) -> None:
        if pause_ms == self.pause_ms:
            return
        self.pause_ms = pause_ms
        self._ballast = []
        if pause_ms <= 0:
            gc.unfreeze()
            return
        gc.freeze()  # the process's own objects out of the collector's way: the ballast alone sets the pause
        target_ns = pause_ms * 1e6
        self._resize(int(target_ns / NS_PER_OBJECT_GUESS))
        self.collect()  # the first full collection after a big allocation is slower than the later ones
        for _ in range(3):  # corrections from the real cost on this host, in this process
            took_ns = min(self._timed_collect() for _ in range(3))  # the least: a preempted collection looks long
            if abs(took_ns - target_ns) < 0.15 * target_ns:
                break
            self._resize(int(len(self._ballast) * target_ns / max(took_ns, 1)))

    def _resize(self, num: int) -> None:
        num = min(max(num, 1000), MAX_BALLAST)
        if num < len(self._ballast):
            del self._ballast[num:]
        else:
            self._ballast.extend([] for _ in range(num - len(self._ballast)))

    def _timed_collect(self) -> int:
        start = time.perf_counter_ns()
        self.collect()
        return time.perf_counter_ns() - start

    def collect(self) -> int:
        """One full collection now; returns how many objects it freed."""
        for _ in range(1000):
            cycle: list = []
            cycle.append(cycle)
        return gc.collect(2)


class GilHogs:
    """Threads of pure-Python busy work (named `gs-gil-hog`): each holds the GIL for the interpreter's switch
    interval (5 ms by default) at a time, so the step thread waits for it whenever it wants to run Python."""

    def __init__(self) -> None:
        self._threads: list[tuple[threading.Thread, threading.Event]] = []

    @property
    def num_threads(self) -> int:
        return len(self._threads)

    def set(self, num: int) -> None:
        while len(self._threads) > num:
            thread, stop = self._threads.pop()
            stop.set()
            thread.join(timeout=5)
        while len(self._threads) < num:
            stop = threading.Event()
            thread = threading.Thread(target=_spin, args=(stop,), name=procname.GIL_HOG, daemon=True)
            thread.start()
            self._threads.append((thread, stop))

    def tids(self) -> list[int]:
        return [t.native_id for t, _ in self._threads if t.native_id is not None]


def _spin(stop: threading.Event) -> None:
    procname.set_thread_name(procname.GIL_HOG)
    total = 0
    while not stop.is_set():
        for i in range(20_000):  # pure bytecode: never releases the GIL on its own
            total += i * i
