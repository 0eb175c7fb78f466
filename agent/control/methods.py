"""The API the agent serves on its control socket: each method reads the agent's state and answers in JSON terms.

status, probes, config, snapshot(sources), events(start_ns, end_ns, kinds, pid, limit),
samples(series, start_ns, end_ns, limit), watch(pids), requests(limit), explain(request_id).
"""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from gpusleuth.agent.control.protocol import ControlError
from gpusleuth.agent.diagnosis.explain import explain
from gpusleuth.probes import registry
from gpusleuth.probes import snapshot_codec
from gpusleuth.probes.spans.snapshot import RequestRow

if TYPE_CHECKING:
    from gpusleuth.agent.control.server import ControlServer
    from gpusleuth.agent.runtime import Agent

CONFIG_SECTIONS = ("agent", "control", "store", "recorder", "exporter", "watch")


class ControlApi:
    """Binds the control methods to one running agent."""

    def __init__(self, agent: "Agent") -> None:
        self.agent = agent

    def register(self, server: "ControlServer") -> None:
        for name in ("status", "probes", "config", "snapshot", "events", "samples", "watch", "requests", "explain"):
            server.register(name, getattr(self, name))

    def status(self) -> dict[str, Any]:
        return self.agent.status()

    def probes(self) -> dict[str, Any]:
        return registry.requirements_report(self.agent.config.enabled_probes)

    def config(self) -> dict[str, Any]:
        cfg = self.agent.config
        return {"source": cfg.source, **{k: asdict(getattr(cfg, k)) for k in CONFIG_SECTIONS}}

    def snapshot(self, sources: list[str] | None = None) -> dict[str, Any]:
        """The latest snapshot of each source (or of `sources`), encoded by probes/snapshot_codec.py."""
        snaps = self.agent.store.snapshots()
        return snapshot_codec.encode_snapshots({k: v for k, v in snaps.items() if not sources or k in sources})

    def events(self, start_ns: int | None = None, end_ns: int | None = None, kinds: list[str] | None = None,
               pid: int | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.agent.store.events(start_ns, end_ns, kinds, pid, limit)]

    def samples(self, series: str | None = None, start_ns: int | None = None, end_ns: int | None = None,
                limit: int = 1000) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.agent.store.samples(series, start_ns, end_ns, limit)]

    def watch(self, pids: list[int]) -> list[int]:
        return self.agent.watch_pids({int(p) for p in pids})

    def requests(self, limit: int = 200) -> list[RequestRow]:
        """The most recent finished engine requests (newest last)."""
        snap = self.agent.store.snapshot("spans")
        return [] if snap is None else snap.recent[-int(limit):]

    def explain(self, request_id: str) -> dict[str, Any]:
        """A request's phases, the host evidence overlapping it, and ranked causes."""
        request = next((r for r in reversed(self.requests(10**9)) if r["request_id"] == request_id), None)
        if request is None:
            raise ControlError("not_found", f"no finished request {request_id!r} in the agent's recent requests")
        return explain(request, self.agent.store.events(request["start_ns"], request["end_ns"]))
