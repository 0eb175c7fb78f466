"""One scrape of an engine's Prometheus endpoint, read with prometheus_client's text parser into the gauges and
histograms discovery knows for its kind (label sets summed: one engine may report per model or per engine core)."""
from __future__ import annotations

import math
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from gpusleuth.probes.engines.kinds import EngineKind

MAX_BYTES = 8 << 20


class ScrapeError(Exception):
    """The endpoint did not answer with the engine's metrics; the message says what happened."""


@dataclass(slots=True)
class Histogram:
    """Cumulative counts per upper bound (seconds; the last bound is +Inf), with count and sum."""

    bounds: list[float] = field(default_factory=list)
    cumulative: list[float] = field(default_factory=list)
    count: float = 0.0
    sum: float = 0.0


@dataclass(slots=True)
class Scrape:
    gauges: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    num_families: int = 0


def fetch(url: str, timeout_s: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ScrapeError(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ScrapeError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    if len(body) > MAX_BYTES:
        raise ScrapeError(f"{url} sent more than {MAX_BYTES >> 20} MiB")
    return body.decode("utf-8", "replace")


def parse(text: str, kind: EngineKind) -> Scrape:
    """The kind's gauges and histograms from an exposition text; ScrapeError if none of its metrics is there."""
    try:
        families = {f.name: f for f in text_string_to_metric_families(text)}
    except ValueError as exc:
        raise ScrapeError(f"not Prometheus text: {exc}") from None
    if not any(name.startswith(kind.prefix) for name in families):
        raise ScrapeError(f"no {kind.prefix}* metrics: not {kind.name}'s endpoint")
    out = Scrape(num_families=len(families))
    for key, names in kind.gauges.items():
        fam = _first(families, names)
        if fam is not None:
            out.gauges[key] = sum(s.value for s in fam.samples if not math.isnan(s.value))
    for key, names in kind.histograms.items():
        fam = _first(families, names)
        if fam is not None and fam.type == "histogram":
            out.histograms[key] = _histogram(fam)
    return out


def _first(families: dict, names: tuple[str, ...]):
    # the parser names counters without _total and histograms without _bucket
    return next((families[n] for n in names if n in families), None)


def _histogram(fam) -> Histogram:
    by_le: dict[float, float] = {}
    h = Histogram()
    for s in fam.samples:
        if s.name.endswith("_bucket"):
            le = float(s.labels.get("le", "inf"))
            by_le[le] = by_le.get(le, 0.0) + s.value
        elif s.name.endswith("_count"):
            h.count += s.value
        elif s.name.endswith("_sum"):
            h.sum += s.value
    h.bounds = sorted(by_le)
    h.cumulative = [by_le[b] for b in h.bounds]
    return h


def quantile(bounds: list[float], cumulative: list[float], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, linearly within its bucket (Prometheus' histogram_quantile)."""
    if not cumulative or cumulative[-1] <= 0:
        return None
    rank = q * cumulative[-1]
    for i, c in enumerate(cumulative):
        if c >= rank:
            lo = bounds[i - 1] if i else 0.0
            hi = bounds[i]
            if math.isinf(hi):
                return lo
            below = cumulative[i - 1] if i else 0.0
            return lo + (hi - lo) * ((rank - below) / (c - below) if c > below else 1.0)
    return None
