"""The API the agent serves on its control socket: each method reads the agent's state and answers in JSON terms.

status, probes, config, snapshot(sources), events(start_ns, end_ns, kinds, pid, limit),
samples(series, start_ns, end_ns, limit), watch(pids), requests(limit), explain(request_id),
diagnoses(since_ns, slowest, min_excess_ms, limit), incidents(since_ns, is_open), memory(limit).
"""
from __future__ import annotations

import tracemalloc
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from gpusleuth.agent import memory
from gpusleuth.agent.control.protocol import ControlError
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
        for name in ("status", "probes", "config", "snapshot", "events", "samples", "watch", "requests", "explain",
                     "diagnoses", "incidents", "memory"):
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
        """A finished request's latency budget, the verdicts that split its excess, and what stays unexplained."""
        row = next((r for r in reversed(self.requests(10**9)) if r["request_id"] == request_id), None)
        report = self.agent.diagnosis.explain(request_id, row=row)
        if report is None:
            raise ControlError("not_found", f"no finished request {request_id!r} in the agent's recent requests "
                               "(`agent explain --slowest` lists the ones it has)")
        return report

    def diagnoses(self, since_ns: int | None = None, slowest: int | None = None, min_excess_ms: float = 0.0,
                  limit: int = 1000) -> list[dict[str, Any]]:
        """Summaries of the diagnosed requests (newest last): since `since_ns`, with at least `min_excess_ms` of
        excess; `slowest` N: the N with the most excess instead."""
        rows = [d for d in self.agent.diagnosis.diagnoses(since_ns) if d["excess_ms"] >= float(min_excess_ms)]
        if slowest is not None:
            rows = sorted(rows, key=lambda d: d["excess_ms"], reverse=True)[:int(slowest)]
        return rows[-int(limit):]

    def incidents(self, since_ns: int | None = None, is_open: bool | None = None) -> list[dict[str, Any]]:
        """Incidents (oldest first) that lasted until `since_ns` or later; only open or closed ones if asked."""
        return self.agent.diagnosis.incidents(since_ns, is_open)

    def memory(self, limit: int = 25, trace: bool | None = None) -> dict[str, Any]:
        """Where the agent's memory goes: RSS and the store's estimate; `trace=True` starts tracemalloc (it slows
        the agent: for a diagnosis, not for always), `False` stops it; while it traces, the top sites of the
        allocations made since it started that are still alive (what grows)."""
        if trace and not tracemalloc.is_tracing():
            tracemalloc.start()
        out: dict[str, Any] = {"rss_bytes": self.agent.health()["rss_bytes"], "store": self.agent.store.stats(),
                               "allocator": memory.allocator_stats(), "is_tracing": tracemalloc.is_tracing()}
        if tracemalloc.is_tracing() and trace is not True:
            stats = tracemalloc.take_snapshot().statistics("lineno")
            out["traced_bytes"] = sum(s.size for s in stats)
            out["top"] = [{"where": str(s.traceback[0]), "bytes": s.size, "blocks": s.count} for s in stats[:limit]]
        if trace is False:
            tracemalloc.stop()
        return out
