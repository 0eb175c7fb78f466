"""The running agent: probes, store, watcher, recorder, exporter and control socket, wired together."""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict
from typing import Any

from gpusleuth.agent import memory
from gpusleuth.agent.config import Config
from gpusleuth.agent.control import ControlError, ControlServer
from gpusleuth.agent.correlate import WAIT_SYSCALLS, rank_causes
from gpusleuth.agent.probe_runner import ProbeRunner
from gpusleuth.agent.recorder import Recorder
from gpusleuth.agent.store import Store
from gpusleuth.agent.watch import Watcher
from gpusleuth.exporters.server import ExporterServer
from gpusleuth.probes import registry
from gpusleuth.probes.base import WatchSet
from gpusleuth.probes.records import Event, monotonic_ns, wall_offset_ns

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The agent could not start (e.g. the exporter port is taken); the message names the key to fix."""


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def event_to_dict(e: Event) -> dict[str, Any]:
    return {"kind": e.kind, "source": e.source, "start_ns": e.start_ns, "end_ns": e.end_ns, "pid": e.pid,
            "tid": e.tid, "comm": e.comm, "attrs": dict(e.attrs)}


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.started_ns = monotonic_ns()
        self.store = Store(config.store.memory_cap_mb << 20)
        self.watcher = Watcher(config.watch)
        self.watch = WatchSet()
        self.recorder: Recorder | None = None
        self.exporter: ExporterServer | None = None
        self.control = ControlServer(config.control.socket, config.control.group)
        self.runners: dict[str, ProbeRunner] = {}
        self.stop_event = threading.Event()
        self._watch_dirty = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        memory.tune_allocator()
        if self.config.recorder.is_enabled:
            self.recorder = Recorder(self.store, self.config.recorder)
        if self.config.exporter.is_enabled:
            host, port = self.config.exporter.address
            try:
                self.exporter = ExporterServer(self.store, host, port)
                self.exporter.start()
            except OSError as exc:
                raise StartupError(f"exporter.listen {self.config.exporter.listen}: {exc.strerror}; "
                                   "choose a free address in [exporter] listen") from None
        self.watch = self.watcher.resolve()
        for name in self.config.enabled_probes:
            self.runners[name] = self._make_runner(name)
            self.runners[name].start()
        from gpusleuth.probes.bpf_common import release_compiler_memory  # noqa: PLC0415
        release_compiler_memory()
        self._register_methods()
        self.control.start()
        self._publish_health()

    def _make_runner(self, name: str) -> ProbeRunner:
        cfg = self.config.probes.get(name)
        try:
            cls = registry.probe_class(name)
        except ImportError as exc:
            return ProbeRunner(name, None, self.store, self._on_snapshot, f"probe module not installed: {exc}")
        probe = cls(cfg if cfg is not None else cls.config_class())
        probe.update_watch(self.watch)
        return ProbeRunner(name, probe, self.store, self._on_snapshot)

    def _on_snapshot(self, name: str, snapshot: dict) -> None:
        """Processes that announce themselves (engine span senders) join the watch set."""
        for pid in snapshot.get("watch_pids", ()):
            if self.watcher.add_span_sender(int(pid)):
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
        for runner in self.runners.values():
            runner.stop()
        if self.recorder is not None:
            try:
                self.recorder.close()
            except OSError as exc:
                log.error("final recorder flush failed: %s", exc)
        self.control.stop()
        if self.exporter is not None:
            self.exporter.stop()
        log.info("agent stopped")

    # --- state for consumers ---------------------------------------------------------------------------------
    def _publish_health(self) -> None:
        self.store.set_snapshot("agent", self.health())

    def health(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "uptime_s": (monotonic_ns() - self.started_ns) / 1e9,
                "probes": {n: r.status() for n, r in self.runners.items()}, "store": self.store.stats(),
                "recorder": self.recorder.status() if self.recorder else None, "rss_bytes": _rss_bytes()}

    def status(self) -> dict[str, Any]:
        out = self.health()
        out.update(config_source=self.config.source, watched_pids=sorted(self.watch.tgids),
                   watch_all=self.watch.is_all, control_socket=self.config.control.socket,
                   exporter=(f"http://{self.exporter.host}:{self.exporter.port}/metrics" if self.exporter else None),
                   monotonic_ns=monotonic_ns(), wall_offset_ns=wall_offset_ns())
        return out

    def _register_methods(self) -> None:
        c = self.control
        c.register("status", self.status)
        c.register("probes", lambda: probe_requirements(self.config.enabled_probes))
        c.register("snapshot", lambda sources=None: {k: v for k, v in self.store.snapshots().items()
                                                      if not sources or k in sources})
        c.register("events", lambda start_ns=None, end_ns=None, kinds=None, pid=None, limit=1000: [
            event_to_dict(e) for e in self.store.events(start_ns, end_ns, kinds, pid, limit)])
        c.register("samples", lambda series=None, start_ns=None, end_ns=None, limit=1000: [
            {"series": s.series, "t_ns": s.t_ns, "value": s.value, "labels": dict(s.labels)}
            for s in self.store.samples(series, start_ns, end_ns, limit)])
        c.register("watch", self._watch_pids)
        c.register("requests", self.requests)
        c.register("explain", self.explain)
        c.register("config", lambda: {"source": self.config.source, **{
            k: asdict(getattr(self.config, k)) for k in ("agent", "control", "store", "recorder", "exporter", "watch")}})

    def requests(self, limit: int = 200) -> list[dict[str, Any]]:
        """The most recent finished engine requests (newest last)."""
        snap = self.store.snapshot("spans") or {}
        return list(snap.get("recent", []))[-int(limit):]

    def explain(self, request_id: str) -> dict[str, Any]:
        """A request's phases, the host events overlapping it, and ranked causes."""
        request = next((r for r in reversed(self.requests(10**9)) if r["request_id"] == request_id), None)
        if request is None:
            raise ControlError("not_found", f"no finished request {request_id!r} in the agent's recent requests")
        window = self.store.events(request["start_ns"], request["end_ns"])
        phases_ev = [e for e in window if e.kind.startswith("request.") and e.kind != "request.finished"
                     and e.pid == request["pid"] and e.attrs.get("request_id") == request_id]
        phases = {e.kind.split(".", 1)[1]: (e.start_ns, e.end_ns) for e in phases_ev}
        others = [e for e in window if not e.kind.startswith("request.") and e.kind != "engine.step"]
        # Threads parked in futex/epoll_wait for minutes overlap every request; listing them buries the evidence.
        is_idle = [e.kind == "slow_syscall" and e.attrs.get("syscall") in WAIT_SYSCALLS for e in others]
        shown = [e for e, idle in zip(others, is_idle) if not idle]
        steps = [e for e in window if e.kind == "engine.step" and e.pid == request["pid"]]
        verdicts = rank_causes(request, phases, others)
        return {"request": request,
                "phases": [{"phase": e.kind.split(".", 1)[1], "start_ns": e.start_ns, "end_ns": e.end_ns,
                            "rank": e.attrs.get("rank"), "tokens": e.attrs.get("tokens"),
                            "batch_size": e.attrs.get("batch_size")} for e in phases_ev],
                "steps": len(steps), "overlapping": [event_to_dict(e) for e in shown[-500:]],
                "idle_waits_hidden": sum(is_idle),
                "verdicts": [v.to_dict() for v in verdicts]}

    def _watch_pids(self, pids: list[int]) -> list[int]:
        self.watcher.add_pids({int(p) for p in pids})
        self._watch_dirty.set()
        return sorted(pids)


def probe_requirements(names: list[str] | None = None) -> dict[str, Any]:
    """For `agent probes`: per probe, whether it loads and what it needs, checked on this host now."""
    out = {}
    for name in names or list(registry.PROBES):
        try:
            cls = registry.probe_class(name)
        except ImportError as exc:
            out[name] = {"loadable": False, "error": str(exc), "requirements": []}
            continue
        reqs = cls.requirements()
        out[name] = {"loadable": True, "ready": all(r.is_met for r in reqs),
                     "requirements": [{"name": r.name, "met": r.is_met, "detail": r.detail, "fix": r.how_to_fix}
                                      for r in reqs]}
    return out
