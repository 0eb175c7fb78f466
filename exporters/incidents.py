"""Prometheus collector for the diagnosis' incidents (the agent's `diagnosis` snapshot, plain data).

`gpusleuth_incidents_total{cause}` counts incidents opened since the agent started; `gpusleuth_incident_active
{cause, engine_pid, culprit_comm}` is 1 for each open one. Labels stay bounded: one cause of sixteen, the engine's
pid and the culprit's comm (never a request id or a tid); an incident that closes leaves the scrape with it.
"""
from __future__ import annotations

from typing import Any, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from gpusleuth.exporters.base import SnapshotCollector


class IncidentCollector(SnapshotCollector):
    source = "diagnosis"

    def metrics(self, snap: dict[str, Any]) -> Iterator[Metric]:
        total = CounterMetricFamily("gpusleuth_incidents", "Incidents the diagnosis opened, by cause",
                                    labels=["cause"])
        for cause, n in sorted((snap.get("incidents_total") or {}).items()):
            total.add_metric([cause], n)
        yield total
        active = GaugeMetricFamily("gpusleuth_incident_active", "1 while an incident of this cause is open",
                                   labels=["cause", "engine_pid", "culprit_comm"])
        seen: set[tuple[str, str, str]] = set()
        for inc in snap.get("open") or ():
            key = (str(inc.get("cause")), str(inc.get("engine_pid")), str((inc.get("culprit") or {}).get("comm", "")))
            if key not in seen:  # two open incidents can share labels (same cause, culprit comm): one series
                seen.add(key)
                active.add_metric(list(key), 1)
        yield active
