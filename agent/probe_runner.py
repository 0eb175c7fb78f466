"""Runs one probe: start it, poll it on its interval in its own thread, feed the store, stop it."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, TypedDict

from gpusleuth.agent.store import Store
from gpusleuth.probes.base import Probe, ProbeState, ProbeStatus, ProbeUnavailable
from gpusleuth.probes.records import monotonic_ns

log = logging.getLogger(__name__)


class ProbeHealth(TypedDict):
    """One probe in the agent's health snapshot: ProbeStatus.to_dict() plus how its polls went."""

    state: str  # ProbeState value
    reason: str
    path: str  # which implementation path the probe took
    details: dict[str, Any]
    polls: int
    poll_errors: int
    last_poll_s: float  # duration of the last poll
    last_error: str


class ProbeRunner:
    """Owns one probe's lifecycle and poll thread; never lets a probe failure take the agent down."""

    def __init__(self, name: str, probe: Probe | None, store: Store, on_snapshot: Callable[[str, Any], None],
                 unavailable_reason: str = "") -> None:
        self.name = name
        self.probe = probe
        self.store = store
        self.on_snapshot = on_snapshot
        self.polls = 0
        self.poll_errors = 0
        self.last_poll_s = 0.0
        self.last_error = ""
        self._reason = unavailable_reason
        self._is_started = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Attach the probe; on failure record why and leave the agent running without it."""
        if self.probe is None:
            return False
        try:
            self.probe.start()
        except ProbeUnavailable as exc:
            self._reason = str(exc)
            log.warning("probe %s unavailable: %s", self.name, exc)
            self.probe.stop()
            return False
        self._is_started = True
        self._thread = threading.Thread(target=self._loop, name=f"probe-{self.name}", daemon=True)
        self._thread.start()
        log.info("probe %s started (%s)", self.name, self.probe.status().path)
        return True

    def _loop(self) -> None:
        interval = float(self.probe.config.interval_s)
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.poll_once()
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (slow poll): skip ahead rather than burst
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def poll_once(self) -> None:
        t0 = time.perf_counter()
        try:
            result = self.probe.poll(monotonic_ns())
        except Exception as exc:  # a probe bug or a transient host error: count, log once per kind, go on
            self.poll_errors += 1
            message = f"{type(exc).__name__}: {exc}"
            if message != self.last_error:
                log.exception("probe %s poll failed", self.name)
            self.last_error = message
            self.probe.set_status(ProbeState.DEGRADED, f"poll failed: {message}")
            return
        finally:
            self.last_poll_s = time.perf_counter() - t0
            self.polls += 1
        self.store.add(result.samples, result.events)
        if result.snapshot is not None:
            self.store.set_snapshot(self.name, result.snapshot)
            self.on_snapshot(self.name, result.snapshot)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.probe is not None and self._is_started:
            try:
                self.probe.stop()
            except Exception:  # detach the others even if one fails
                log.exception("probe %s failed to stop cleanly", self.name)
        self._is_started = False

    def status(self) -> ProbeHealth:
        if self.probe is None or not self._is_started:
            st = ProbeStatus(ProbeState.UNAVAILABLE, self._reason or "not started")
            if self.probe is not None and self.probe.status().state == ProbeState.STOPPED and not self._reason:
                st = self.probe.status()
        else:
            st = self.probe.status()
        return ProbeHealth(**st.to_dict(), polls=self.polls, poll_errors=self.poll_errors,
                           last_poll_s=self.last_poll_s, last_error=self.last_error)
