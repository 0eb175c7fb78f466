"""What every collector shares: it reads one source's latest snapshot from the store on each scrape.

Series come from the snapshot alone, so an entity that left the snapshot (an exited process, a lost GPU) leaves the
scrape with it, and nothing on the scrape path touches NVML or a BPF map.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterator

from prometheus_client.metrics_core import Metric


class SnapshotCollector:
    """A prometheus_client collector over `store.snapshot(source)`; subclasses turn one snapshot into families."""

    source: ClassVar[str]

    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        snap = self.store.snapshot(self.source)
        if snap is not None:
            yield from self.metrics(snap)

    def metrics(self, snap: Any) -> Iterator[Metric]:
        """The metric families of one snapshot."""
        raise NotImplementedError
