"""The agent's own health: probe states, poll durations, store size and drops, recorder, uptime."""
from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from gpusleuth.exporters.base import SnapshotCollector
from gpusleuth.agent.health import AgentHealth

STATES = ("ok", "degraded", "unavailable", "stopped")


class AgentHealthCollector(SnapshotCollector):
    """Reads the "agent" snapshot the agent's supervisor refreshes every second."""

    source = "agent"

    def metrics(self, snap: AgentHealth) -> Iterator[Metric]:
        up = GaugeMetricFamily("gpusleuth_agent_uptime_seconds", "Seconds since the agent started")
        up.add_metric([], snap["uptime_s"])
        yield up
        state = GaugeMetricFamily("gpusleuth_probe_state", "1 for the probe's current state", labels=["probe", "state"])
        polls = CounterMetricFamily("gpusleuth_probe_polls", "Polls run per probe", labels=["probe"])
        errors = CounterMetricFamily("gpusleuth_probe_poll_errors", "Polls that raised", labels=["probe"])
        last = GaugeMetricFamily("gpusleuth_probe_poll_duration_seconds", "Duration of the probe's last poll",
                                 labels=["probe"])
        late = GaugeMetricFamily("gpusleuth_probe_event_lateness_seconds", "How late the probe's last poll "
                                 "delivered its oldest event (poll time - event end; kernel-buffer probes)",
                                 labels=["probe"])
        for name, p in snap["probes"].items():
            for s in STATES:
                state.add_metric([name, s], 1.0 if p["state"] == s else 0.0)
            polls.add_metric([name], p.get("polls", 0))
            errors.add_metric([name], p.get("poll_errors", 0))
            last.add_metric([name], p.get("last_poll_s", 0.0))
            if "lateness_s" in p.get("details", {}):
                late.add_metric([name], p["details"]["lateness_s"])
        yield from (state, polls, errors, last, late)
        st = snap["store"]
        records = GaugeMetricFamily("gpusleuth_store_records", "Records held in memory", labels=["kind"])
        capacity = GaugeMetricFamily("gpusleuth_store_capacity_records", "Ring capacity", labels=["kind"])
        dropped = CounterMetricFamily("gpusleuth_store_dropped", "Records evicted before they were recorded",
                                      labels=["kind"])
        for kind in ("samples", "events"):
            records.add_metric([kind], st[kind])
            capacity.add_metric([kind], st[f"{kind[:-1]}_capacity"])
            dropped.add_metric([kind], st[f"{kind}_dropped"])
        yield from (records, capacity, dropped)
        mem = GaugeMetricFamily("gpusleuth_store_bytes", "Approximate memory held by the store")
        mem.add_metric([], st["approx_bytes"])
        yield mem
        rec = snap.get("recorder")
        if rec:
            size = GaugeMetricFamily("gpusleuth_recorder_bytes", "Bytes of parquet under the recording directory")
            size.add_metric([], rec["bytes"])
            flushes = CounterMetricFamily("gpusleuth_recorder_flushes", "Recorder flushes")
            flushes.add_metric([], rec["flushes"])
            yield from (size, flushes)
        rss = GaugeMetricFamily("gpusleuth_agent_resident_memory_bytes", "Agent resident set size")
        rss.add_metric([], snap.get("rss_bytes", 0))
        yield rss
