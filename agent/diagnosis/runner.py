"""The diagnosis thread of a running agent: every `interval_s` it takes what the store gathered since last time,
advances the Monitor to the evidence horizon, runs the live window (incidents), stores the incident Events and
the hot threads' CPU samples, publishes the `diagnosis` snapshot and tells the sched probe which threads are hot.

Control-socket calls (explain, incidents, diagnoses) read the Monitor under the same lock.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from gpusleuth.agent.diagnosis.hostinfo import (from_gpu_snapshot, from_samples, from_sched_snapshot, refresh_threads,
                                                thread_cpu_samples)
from gpusleuth.agent.diagnosis.monitor import Monitor, MonitorConfig, horizon
from gpusleuth.agent.store import Store
from gpusleuth.probes.records import monotonic_ns

log = logging.getLogger(__name__)
THREADS_EVERY_NS = 5_000_000_000  # re-list the engines' threads this often


class DiagnosisRunner:
    def __init__(self, store: Store, set_hot_threads: Callable[[set[int]], None] | None = None,
                 config: MonitorConfig | None = None) -> None:
        self.store = store
        self.monitor = Monitor(config)
        self.lock = threading.Lock()
        self.set_hot_threads = set_hot_threads
        self.ticks = 0
        self.errors = 0
        self.last_tick_ms = 0.0
        self.busy_s = 0.0  # wall time spent in ticks
        self.cpu_s = 0.0  # CPU time of the diagnosis thread in ticks (what it costs the agent)
        self._cursor = {"events": 0, "samples": 0}
        self._hot: set[int] = set()
        self._cpus: dict[int, int] = {}
        self._threads_at = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._cursor = {"events": self.store.events_since(0)[1], "samples": self.store.samples_since(0)[1]}
        self._thread = threading.Thread(target=self._loop, name="diagnosis", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        interval = self.monitor.config.interval_s
        while not self._stop.wait(interval):
            try:
                self.tick(monotonic_ns())
            except Exception:  # a diagnosis bug must not stop the agent: count it, log it once
                self.errors += 1
                if self.errors == 1:
                    log.exception("diagnosis tick failed")

    def tick(self, now_ns: int) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        events, self._cursor["events"] = self.store.events_since(self._cursor["events"])
        samples, self._cursor["samples"] = self.store.samples_since(self._cursor["samples"])
        snaps = self.store.snapshots()
        m = self.monitor
        with self.lock:
            from_samples(m.host, samples)
            if snaps.get("gpu") is not None:
                from_gpu_snapshot(m.host, snaps["gpu"])
            if snaps.get("sched") is not None:
                from_sched_snapshot(m.host, snaps["sched"])
            m.feed(events, samples)
            m.advance(horizon(snaps, now_ns, int(m.config.max_lag_s * 1e9)))
            incidents = m.live(now_ns, snaps.get("sched"))
            m.prune(now_ns)
            hot = m.hot_threads()
            threads = self._hot_pairs()
            snapshot = m.snapshot(now_ns)
        snapshot["runner"] = {"ticks": self.ticks, "errors": self.errors, "cpu_s": round(self.cpu_s, 4),
                              "last_tick_ms": round(self.last_tick_ms, 3)}
        cpu = thread_cpu_samples(threads, self._cpus, now_ns)
        if now_ns - self._threads_at >= THREADS_EVERY_NS:
            self._threads_at = now_ns
            refresh_threads(m.host, {p for eng in m.engines.by_pid.values()
                                     for p in (eng.pid, *eng.rank_pids.values())})
        self.store.add(samples=cpu, events=incidents)
        self.store.set_snapshot("diagnosis", snapshot)
        if hot != self._hot and self.set_hot_threads is not None:
            self._hot = hot
            self.set_hot_threads(hot)
        self.ticks += 1
        self.last_tick_ms = (time.perf_counter() - t0) * 1e3
        self.busy_s += self.last_tick_ms / 1e3
        self.cpu_s += time.thread_time() - c0

    def _hot_pairs(self) -> list[tuple[int, int]]:
        return [(eng.rank_pids.get(rank, eng.pid), tid) for eng in self.monitor.engines.by_pid.values()
                for rank, tid in eng.step_tids.items() if tid]

    # --- the control API's reads ------------------------------------------------------------------------------
    def explain(self, request_id: str, row: dict[str, Any] | None = None) -> dict[str, Any] | None:
        with self.lock:
            return self.monitor.explain(request_id, row=row)

    def incidents(self, since_ns: int | None = None, is_open: bool | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return self.monitor.tracker.incidents(since_ns, is_open)

    def diagnoses(self, since_ns: int | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [d for d in self.monitor.recent if since_ns is None or d["end_ns"] >= since_ns]
