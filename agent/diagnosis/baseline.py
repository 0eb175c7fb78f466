"""What an engine's work normally costs: rolling baselines of step time by batch shape, and of the parts of a
request that are not steps (arrival, queue, stream, the gap between steps).

A step's shape is (decode sequences, prefill tokens), bucketed: decode counts exact up to 8 then by powers of two,
prefill tokens by half-octaves. Each shape keeps its recent *clean* steps (no evidence of trouble on the step
thread, not far above the shape's current cost), at most a few per second so that a long fault the evidence
missed needs minutes to move it. The expected cost is their trimmed mean (the top tenth left out): a request's
expected time is a *sum* over its steps, and a sum of typical steps is n times the mean, not the median.
The first steps of an engine (model warm-up, graph capture, allocator growth) never enter a baseline. A shape with
too few steps borrows the nearest shape that has enough.
"""
from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

from gpusleuth.agent.diagnosis.spans import Step

WARMUP_STEPS = 20  # an engine's first steps are not typical
MIN_SAMPLES = 5  # a shape needs this many clean steps before it stands for itself
WINDOW = 256  # clean steps kept per shape
MIN_GAP_NS = 250_000_000  # at most one step per shape enters the window per this interval
TRIM = 0.1  # the slowest tenth of a window is left out of its mean (what slipped past the evidence)
GAP_WINDOW, GAP_TRIM = 1024, 0.02
PART_WINDOW = 256  # requests kept per part baseline
OUTLIER = 3.0  # a step this many times the shape's median is not clean, whatever the evidence says

Shape = tuple[int, int]


def shape_of(num_decode: int, num_prefill_tokens: int) -> Shape:
    """(decode bucket, prefill bucket) of a batch."""
    d = num_decode if num_decode <= 8 else 8 + (num_decode - 1).bit_length() - 3
    p = 0 if num_prefill_tokens <= 0 else 1 + int(2 * math.log2(num_prefill_tokens))
    return d, p


@dataclass(slots=True)
class StepCost:
    """The expected cost of one step: wall time, time asleep on the step thread, GPU time (None: unknown)."""

    dur_ns: float
    sleep_ns: float = 0.0
    gpu_ms: float | None = None
    source: str = "shape"  # "shape" | "nearest" (borrowed) | "none" (no baseline yet)


@dataclass(slots=True)
class _Window:
    durs: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    sleeps: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    gpus: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    last_ns: int = 0
    cached: StepCost | None = None

    def add(self, dur: int, sleep: int, t_ns: int) -> None:
        self.durs.append(dur)
        self.sleeps.append(sleep)
        self.last_ns = t_ns
        self.cached = None

    def cost(self) -> StepCost:
        if self.cached is None:
            self.cached = StepCost(trimmed_mean(self.durs), trimmed_mean(self.sleeps),
                                   trimmed_mean(self.gpus) if self.gpus else None)
        return self.cached


def trimmed_mean(values, trim: float = TRIM) -> float:
    """Mean of the values without the largest `trim` share of them."""
    ordered = sorted(values)
    kept = ordered[:max(1, len(ordered) - int(trim * len(ordered)))]
    return float(statistics.fmean(kept))


def quantile(values, q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


class StepBaseline:
    """Clean-step costs of one engine rank by shape."""

    def __init__(self) -> None:
        self.shapes: dict[Shape, _Window] = {}
        self.num_seen = 0

    def observe(self, step: Step, sleep_ns: int, is_clean: bool) -> bool:
        """Offer a finished step (with its step thread's sleep time); True if it entered the baseline."""
        self.num_seen += 1
        if self.num_seen <= WARMUP_STEPS or not is_clean:
            return False
        shape = shape_of(step.num_decode, step.num_prefill_tokens)
        cur = self.expected_shape(shape)
        if cur is not None and step.dur_ns > OUTLIER * cur.dur_ns:
            return False
        w = self.shapes.setdefault(shape, _Window())
        if w.durs and step.end_ns - w.last_ns < MIN_GAP_NS:
            return False
        w.add(step.dur_ns, sleep_ns, step.end_ns)
        return True

    def observe_gpu(self, step: Step, gpu_ms: float) -> None:
        """The GPU time of `step` (reported by a later step's span) enters its shape's window."""
        w = self.shapes.get(shape_of(step.num_decode, step.num_prefill_tokens))
        if w is not None:
            w.gpus.append(gpu_ms)
            w.cached = None

    def expected_shape(self, shape: Shape) -> StepCost | None:
        w = self.shapes.get(shape)
        return w.cost() if w is not None and len(w.durs) >= MIN_SAMPLES else None

    def expected(self, num_decode: int, num_prefill_tokens: int) -> StepCost:
        """Expected cost of a step of this batch; borrowed from the nearest shape when this one is thin."""
        shape = shape_of(num_decode, num_prefill_tokens)
        own = self.expected_shape(shape)
        if own is not None:
            return own
        ready = [s for s, w in self.shapes.items() if len(w.durs) >= MIN_SAMPLES]
        if not ready:
            return StepCost(0.0, source="none")
        near = min(ready, key=lambda s: (abs(s[0] - shape[0]) + abs(s[1] - shape[1]), -s[1]))
        c = self.shapes[near].cost()
        return StepCost(c.dur_ns, c.sleep_ns, c.gpu_ms, source="nearest")

    @property
    def is_ready(self) -> bool:
        return any(len(w.durs) >= MIN_SAMPLES for w in self.shapes.values())


class PartBaseline:
    """Recent durations of one request part (arrival, queue, stream), of the gap between steps, or of the
    interference per decode step; a quantile of them."""

    def __init__(self, window: int = PART_WINDOW, trim: float = TRIM) -> None:
        self.values: deque = deque(maxlen=window)
        self.trim = trim
        self._cache: dict[float, float] = {}

    def observe(self, ns: float) -> None:
        self.values.append(ns)
        self._cache.clear()

    def expected(self, q: float = 0.5) -> float | None:
        """The q-quantile of the recent values (the median by default); None before MIN_SAMPLES."""
        if len(self.values) < MIN_SAMPLES:
            return None
        if q not in self._cache:
            self._cache[q] = quantile(self.values, q)
        return self._cache[q]

    def mean(self) -> float | None:
        """The trimmed mean (for what is summed: the gaps between a request's steps); None before MIN_SAMPLES."""
        if len(self.values) < MIN_SAMPLES:
            return None
        if -1.0 not in self._cache:
            self._cache[-1.0] = trimmed_mean(self.values, self.trim)
        return self._cache[-1.0]


@dataclass(slots=True)
class EngineBaseline:
    """Everything normal about one engine: step costs per rank, part durations, the gap between steps, clocks."""

    steps: dict[int, StepBaseline] = field(default_factory=dict)  # rank -> baseline
    parts: dict[str, PartBaseline] = field(default_factory=dict)  # "arrival", "queue", "stream", "gap"
    sm_clock_mhz: PartBaseline = field(default_factory=PartBaseline)

    def rank(self, rank: int) -> StepBaseline:
        b = self.steps.get(rank)
        if b is None:
            b = self.steps[rank] = StepBaseline()
        return b

    def part(self, name: str) -> PartBaseline:
        b = self.parts.get(name)
        if b is None:
            # gaps between steps are many and bimodal (the loop's overhead; the server thread taking the CPU):
            # a long window, and only the rare outliers trimmed
            b = self.parts[name] = PartBaseline(GAP_WINDOW, GAP_TRIM) if name == "gap" else PartBaseline()
        return b
