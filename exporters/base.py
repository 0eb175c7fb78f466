"""What every collector shares: it reads one source's latest snapshot from the store on each render, and keeps to a
series budget.

Series come from the snapshot alone, so an entity that left the snapshot (an exited process, a lost GPU) leaves the
scrape with it, and nothing on the render path touches NVML or a BPF map.

The budget: a source may put at most `series_budget` labelled samples in one render. Collectors add their series
most important first (the busiest processes, the longest waits); a series that would pass the budget is left out
whole (a histogram never loses some of its buckets) and counted in `gpusleuth_exporter_series_over_budget{source}`.
Samples without labels (a source's totals) and families of at most SMALL_FAMILY samples (fixed label sets such as
`what`) are always kept: they are few and alerts read them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric


SMALL_FAMILY = 16  # a family this small (a fixed label set) is always kept whole
EXITED_PID = "exited"  # the pid label of a comm's exited processes, folded together


@dataclass(slots=True)
class ExportOptions:
    """The [exporter] settings collectors follow, and what the last render left out (source -> samples)."""

    series_budget: int = 2000
    top_threads: int = 16
    bucket_factor: int = 4
    over_budget: dict[str, int] = field(default_factory=dict)


class SnapshotCollector:
    """A prometheus_client collector over `store.snapshot(source)`; subclasses turn one snapshot into families."""

    source: ClassVar[str]

    def __init__(self, store: Any, options: ExportOptions | None = None) -> None:
        self.store = store
        self.options = options or ExportOptions()

    def collect(self) -> Iterator[Metric]:
        snap = self.store.snapshot(self.source)
        left_out = 0
        if snap is not None:
            budget = self.options.series_budget
            for family in self.metrics(snap):
                kept, budget, dropped = _within_budget(family.samples, budget)
                left_out += dropped
                family.samples = kept
                yield family
        self.options.over_budget[self.source] = left_out

    def metrics(self, snap: Any) -> Iterator[Metric]:
        """The metric families of one snapshot, each family's series most important first."""
        raise NotImplementedError


def _within_budget(samples: list, budget: int) -> tuple[list, int, int]:
    """The samples that fit, the budget left, and how many were left out. A series is the samples sharing their
    labels apart from `le` / `quantile` (a histogram's buckets, sum and count stay together)."""
    if len(samples) <= max(budget, SMALL_FAMILY):  # the usual case, and fixed label sets (lost{what}): all kept
        return samples, max(budget - len(samples), 0), 0
    kept, dropped = [], 0
    series: dict[tuple, list] = {}
    for s in samples:
        if not s.labels:
            kept.append(s)
            continue
        key = tuple((k, v) for k, v in s.labels.items() if k not in ("le", "quantile"))
        series.setdefault(key, []).append(s)
    for group in series.values():
        if len(group) <= budget:
            kept.extend(group)
            budget -= len(group)
        else:
            dropped += len(group)
            budget = 0  # later (less important) series stay out too, so what is kept does not flicker
    return kept, budget, dropped


class BudgetCollector:
    """Last in the registry: what each source's collector left out of this render."""

    def __init__(self, options: ExportOptions) -> None:
        self.options = options

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("gpusleuth_exporter_series_over_budget", "Samples a source left out of this "
                                   "scrape because it passed exporter.series_budget", labels=["source"])
        for source, n in sorted(self.options.over_budget.items()):
            family.add_metric([source], n)
        yield family
