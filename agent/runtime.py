"""The running agent: probes, store, watcher, recorder and control socket wired together, plus the services the
command line attaches (the Prometheus exporter), started and stopped with it."""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Protocol

import psutil

from gpusleuth.agent import memory
from gpusleuth.agent.config import Config
from gpusleuth.agent.control.methods import ControlApi
from gpusleuth.agent.control.server import ControlServer
from gpusleuth.agent.diagnosis.runner import DiagnosisRunner
from gpusleuth.agent.health import AgentHealth
from gpusleuth.agent.probe_runner import ProbeRunner
from gpusleuth.agent.recorder import Recorder
from gpusleuth.agent.store import Store
from gpusleuth.agent.watch import Watcher
from gpusleuth.probes import registry
from gpusleuth.probes.base import WatchSet
from gpusleuth.probes.bpf.compiler import release_compiler_memory
from gpusleuth.probes.records import monotonic_ns, wall_offset_ns
from gpusleuth.probes.engines.snapshot import EnginesSnapshot
from gpusleuth.probes.nvtx.snapshot import NvtxSnapshot
from gpusleuth.probes.spans.snapshot import SpansSnapshot

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The agent could not start (e.g. the exporter port is taken); the message names the key to fix."""


class Service(Protocol):
    """Something started with the agent and stopped with it, e.g. the exporter; `start` raises OSError on failure."""

    name: str
    url: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.started_ns = monotonic_ns()
        self.store = Store(config.store.memory_cap_mb << 20)
        self.watcher = Watcher(config.watch)
        self.watch = WatchSet()
        self.recorder: Recorder | None = None
        self.services: dict[str, tuple[Service, str]] = {}  # name -> (service, the config key that sets it up)
        self._process = psutil.Process()
        self.control = ControlServer(config.control.socket, config.control.group)
        self.runners: dict[str, ProbeRunner] = {}
        self.diagnosis = DiagnosisRunner(self.store, self._set_hot_threads)
        self.stop_event = threading.Event()
        self._watch_dirty = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        memory.tune_allocator()
        if self.config.recorder.is_enabled:
            self.recorder = Recorder(self.store, self.config.recorder)
        for name, (service, key) in self.services.items():
            try:
                service.start()
            except OSError as exc:
                raise StartupError(f"{key}: {exc.strerror or exc}; the {name} could not start: change {key} "
                                   "in the config") from None
        self.watch = self.watcher.resolve()
        for name in self.config.enabled_probes:
            self.runners[name] = self._make_runner(name)
            self.runners[name].start()
        release_compiler_memory()
        self.diagnosis.start()
        ControlApi(self).register(self.control)
        self.control.start()
        self._publish_health()

    def add_service(self, service: Service, config_key: str) -> None:
        """Start `service` with the agent (before the probes) and stop it with it; `config_key` names the setting
        to change when it cannot start, e.g. "exporter.listen 127.0.0.1:9464"."""
        self.services[service.name] = (service, config_key)

    def _make_runner(self, name: str) -> ProbeRunner:
        cfg = self.config.probes.get(name)
        try:
            cls = registry.probe_class(name)
        except ImportError as exc:
            return ProbeRunner(name, None, self.store, self._on_snapshot, f"probe module not installed: {exc}")
        probe = cls(cfg if cfg is not None else cls.config_class())
        probe.update_watch(self.watch)
        lifecycle = getattr(probe, "lifecycle", None)
        if lifecycle is not None:  # the kernel probes see execs of watched processes
            lifecycle.on_exec = self._on_exec
        return ProbeRunner(name, probe, self.store, self._on_snapshot)

    def _on_exec(self, change) -> None:
        """A watched process exec'd: its watch rules are evaluated again now rather than at the next rescan."""
        if self.watcher.note_exec(change.tgid, change.comm, change.old_comm):
            self._watch_dirty.set()

    def _set_hot_threads(self, tids: set[int]) -> None:
        """The engines' step threads into the sched probe (off-CPU states are tracked for these)."""
        runner = self.runners.get("sched")
        push = getattr(runner.probe, "set_hot_threads", None) if runner is not None else None
        if push is not None:
            push(tids)

    def _on_snapshot(self, name: str, snapshot: Any) -> None:
        """Processes that announce themselves (engine span and NVTX senders, discovered engines) join the watch
        set."""
        if not isinstance(snapshot, (SpansSnapshot, EnginesSnapshot, NvtxSnapshot)):
            return
        for pid in snapshot.watch_pids:
            if self.watcher.add_span_sender(pid):
                self._watch_dirty.set()

    def run(self) -> None:
        """Supervise until stop_event: rescan the watch set, flush the recorder, publish health."""
        next_watch = next_flush = next_health = time.monotonic()
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now >= next_watch or self._watch_dirty.is_set():
                self._watch_dirty.clear()
                self._refresh_watch()
                next_watch = now + self.config.watch.rescan_interval_s
            if self.recorder is not None and now >= next_flush:
                self._flush()
                next_flush = now + self.config.recorder.flush_interval_s
            if now >= next_health:
                self._publish_health()
                memory.trim()
                next_health = now + 1.0
            self.stop_event.wait(max(0.0, min(next_watch, next_flush, next_health) - time.monotonic()))

    def _refresh_watch(self) -> None:
        watch = self.watcher.resolve()
        if watch != self.watch:
            self.watch = watch
            for r in self.runners.values():
                if r.probe is not None:
                    r.probe.update_watch(watch)

    def _flush(self) -> None:
        try:
            self.recorder.flush()
            self.recorder.last_error = ""
        except OSError as exc:  # disk full or gone: keep the records in memory and retry next interval
            self.recorder.last_error = f"{exc.strerror}: {exc.filename}"
            log.error("recorder flush failed: %s", self.recorder.last_error)

    def shutdown(self) -> None:
        """Detach every probe, flush and close the recording, close sockets."""
        self.stop_event.set()
        self.diagnosis.stop()
        for runner in self.runners.values():
            runner.stop()
        if self.recorder is not None:
            try:
                self.recorder.close()
            except OSError as exc:
                log.error("final recorder flush failed: %s", exc)
        self.control.stop()
        for service, _ in self.services.values():
            service.stop()
        log.info("agent stopped")

    # --- state for consumers ---------------------------------------------------------------------------------
    def _publish_health(self) -> None:
        self.store.set_snapshot("agent", self.health())

    def health(self) -> AgentHealth:
        """The agent's own snapshot ("agent"): probe states and poll costs, store, recorder, memory."""
        return AgentHealth(pid=os.getpid(), uptime_s=(monotonic_ns() - self.started_ns) / 1e9,
                           probes={n: r.status() for n, r in self.runners.items()}, store=self.store.stats(),
                           recorder=self.recorder.status() if self.recorder else None,
                           rss_bytes=self._process.memory_info().rss)

    def status(self) -> dict[str, Any]:
        out = self.health()
        out.update(config_source=self.config.source, watched_pids=sorted(self.watch.tgids),
                   watch_changes=list(self.watcher.changes)[-20:],
                   watch_all=self.watch.is_all, control_socket=self.config.control.socket,
                   exporter=(self.services["exporter"][0].url if "exporter" in self.services else None),
                   monotonic_ns=monotonic_ns(), wall_offset_ns=wall_offset_ns())
        return out

    def watch_pids(self, pids: set[int]) -> list[int]:
        """Add processes to the watch set now (the control API's `watch`)."""
        self.watcher.add_pids(pids)
        self._watch_dirty.set()
        return sorted(pids)

