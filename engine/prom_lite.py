"""A minimal stand-in for the parts of prometheus_client the engine uses, for hosts without it (the GPU hosts have
no prometheus-client and nothing can be installed there). Same names and call shapes; text exposition 0.0.4.
metrics.py uses prometheus_client whenever it is importable.
"""
from __future__ import annotations

import math
import threading
from typing import Iterable


class _Family:
    def __init__(self, name: str, documentation: str, typ: str, labels: Iterable[str] = (), value=None):
        self.name, self.documentation, self.type = name, documentation, typ
        self.labels = list(labels)
        self.samples: list[tuple[str, dict[str, str], float]] = []
        if value is not None:
            self.samples.append((name + ("_total" if typ == "counter" else ""), {}, float(value)))

    def add_metric(self, label_values: list[str], value: float) -> None:
        suffix = "_total" if self.type == "counter" else ""
        self.samples.append((self.name + suffix, dict(zip(self.labels, label_values)), float(value)))


def CounterMetricFamily(name: str, documentation: str, value=None, labels=()):  # noqa: N802 (client API)
    return _Family(name, documentation, "counter", labels, value)


def GaugeMetricFamily(name: str, documentation: str, value=None, labels=()):  # noqa: N802
    return _Family(name, documentation, "gauge", labels, value)


class CollectorRegistry:
    def __init__(self) -> None:
        self._collectors: list = []

    def register(self, collector) -> None:
        self._collectors.append(collector)

    def collect(self):
        for c in self._collectors:
            yield from c.collect()


class _Value:
    def __init__(self) -> None:
        self._v, self._lock = 0.0, threading.Lock()

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self._v += amount

    def set(self, value: float) -> None:
        self._v = float(value)

    def get(self) -> float:
        return self._v


class _Child:
    def __init__(self, kind: str, buckets: tuple[float, ...]) -> None:
        self.kind = kind
        self._value, self._sum = _Value(), _Value()
        self._buckets = list(buckets) + [math.inf]
        self._counts = [_Value() for _ in self._buckets]

    def inc(self, amount: float = 1.0) -> None:
        self._value.inc(amount)

    def set(self, value: float) -> None:
        self._value.set(value)

    def observe(self, value: float) -> None:
        self._sum.inc(value)
        for bound, count in zip(self._buckets, self._counts):
            if value <= bound:
                count.inc()
                break


class _Metric:
    kind = ""

    def __init__(self, name: str, documentation: str, labelnames=(), registry: CollectorRegistry | None = None,
                 buckets: tuple[float, ...] = ()) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self._buckets = tuple(buckets)
        self._children: dict[tuple[str, ...], _Child] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> _Child:
        key = tuple(str(v) for v in values)
        if key not in self._children:
            self._children[key] = _Child(self.kind, self._buckets)
        return self._children[key]

    def collect(self):
        fam = _Family(self.name, self.documentation, self.kind, self.labelnames)
        for key, child in self._children.items():
            labels = dict(zip(self.labelnames, key))
            if self.kind == "histogram":
                cumulative = 0.0
                for bound, count in zip(child._buckets, child._counts):
                    cumulative += count.get()
                    le = "+Inf" if bound == math.inf else repr(float(bound))
                    fam.samples.append((self.name + "_bucket", {**labels, "le": le}, cumulative))
                fam.samples.append((self.name + "_count", labels, cumulative))
                fam.samples.append((self.name + "_sum", labels, child._sum.get()))
            else:
                suffix = "_total" if self.kind == "counter" else ""
                fam.samples.append((self.name + suffix, labels, child._value.get()))
        yield fam


class Counter(_Metric):
    kind = "counter"


class Gauge(_Metric):
    kind = "gauge"


class Histogram(_Metric):
    kind = "histogram"


def generate_latest(registry: CollectorRegistry) -> bytes:
    lines = []
    for fam in registry.collect():
        lines.append(f"# HELP {fam.name} {fam.documentation}")
        lines.append(f"# TYPE {fam.name} {fam.type}")
        for name, labels, value in fam.samples:
            body = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{body}}} {value!r}" if body else f"{name} {value!r}")
    return ("\n".join(lines) + "\n").encode()
