"""Engine discovery: processes of known engines (vLLM, SGLang, TGI, TensorRT-LLM, Triton) are found by command
line and comm every `rescan_interval_s`, announced for watching with their children, and their Prometheus
endpoint (from the config, the port flag in their command line, their listening ports, the default port) is
scraped every `interval_s` on this probe's poll thread, never on a scrape or render path.

Samples per scrape, labelled {pid, engine}: engine.num_running, engine.num_waiting, engine.kv_usage (0..1) where
the engine reports them, and the TTFT / inter-token / end-to-end histograms as engine.<ttft|itl|e2e>_s.bucket
{le} (cumulative, as scraped), .count and .sum. The snapshot (`store.snapshot("engines")`) is a
probes/engines/snapshot.py EnginesSnapshot with percentiles over the last `window_s`.
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

from gpusleuth.probes.base import PollResult, Probe, ProbeState, ProbeUnavailable, Requirement
from gpusleuth.probes.config import ConfigError, check_range
from gpusleuth.probes.engines.discover import Found, discover
from gpusleuth.probes.engines.kinds import BY_NAME, GAUGES
from gpusleuth.probes.engines.scrape import Scrape, ScrapeError, fetch, parse, quantile
from gpusleuth.probes.engines.snapshot import DiscoveredEngine, EnginesSnapshot
from gpusleuth.probes.records import Sample


@dataclass(slots=True)
class EnginesConfig:
    interval_s: float = 2.0  # scrape interval
    rescan_interval_s: float = 10.0  # process-table pass
    timeout_s: float = 1.0  # per scrape
    window_s: float = 60.0  # percentiles in the snapshot cover this much
    kinds: list[str] = field(default_factory=lambda: list(BY_NAME))
    endpoints: list[str] = field(default_factory=list)  # "PID=URL": this engine's metrics are at URL
    is_watching: bool = True  # engines found (and their children) join the kernel probes' watch set

    def __post_init__(self) -> None:
        check_range("interval_s", self.interval_s, 0.1, 3600)
        check_range("rescan_interval_s", self.rescan_interval_s, 0.5, 3600)
        check_range("timeout_s", self.timeout_s, 0.05, 30)
        check_range("window_s", self.window_s, 1, 86400)
        for i, name in enumerate(self.kinds):
            if name not in BY_NAME:
                raise ConfigError(f"kinds[{i}]", f"unknown engine {name!r}; known: {', '.join(BY_NAME)}")
        self.overrides()

    def overrides(self) -> dict[int, str]:
        out = {}
        for i, item in enumerate(self.endpoints):
            pid, sep, url = item.partition("=")
            if not sep or not pid.strip().isdigit() or not url.startswith(("http://", "https://")):
                raise ConfigError(f"endpoints[{i}]", f"{item!r} is not PID=URL (e.g. 4242=http://127.0.0.1:8000/metrics)")
            out[int(pid)] = url.strip()
        return out


@dataclass(slots=True)
class _Engine:
    found: Found
    url: str = ""
    error: str = ""
    scrapes: int = 0
    last_ns: int = 0
    last: Scrape | None = None
    history: deque = field(default_factory=lambda: deque(maxlen=4096))  # (t_ns, {hist: cumulative counts})


class EnginesProbe(Probe):
    name = "engines"
    config_class = EnginesConfig

    def __init__(self, config: EnginesConfig) -> None:
        super().__init__(config)
        self._engines: dict[int, _Engine] = {}
        self._next_scan_ns = 0
        self._scans = 0
        self._is_started = False

    @classmethod
    def requirements(cls) -> list[Requirement]:
        return [Requirement("/proc", os.path.isdir("/proc/self"), "process table", "mount /proc")]

    def start(self) -> None:
        if not os.path.isdir("/proc/self"):
            raise ProbeUnavailable("no /proc: engine processes cannot be found")
        self._is_started = True
        self.set_status(ProbeState.OK, "", f"process table every {self.config.rescan_interval_s:g} s, "
                                           f"metrics every {self.config.interval_s:g} s")

    def poll(self, now_ns: int) -> PollResult:
        if not self._is_started:
            raise ProbeUnavailable("not started")
        if now_ns >= self._next_scan_ns:
            self._rescan()
            self._next_scan_ns = now_ns + int(self.config.rescan_interval_s * 1e9)
        samples: list[Sample] = []
        for pid, eng in self._engines.items():
            samples += self._scrape(pid, eng, now_ns)
        return PollResult(samples=samples, snapshot=self._snapshot(now_ns))

    def _rescan(self) -> None:
        self._scans += 1
        found = {f.pid: f for f in discover(set(self.config.kinds), self.config.overrides(), os.getpid())}
        for pid in [p for p in self._engines if p not in found]:
            del self._engines[pid]
        for pid, f in found.items():
            eng = self._engines.get(pid)
            if eng is None:
                self._engines[pid] = _Engine(f)
            else:
                eng.found = f

    def _scrape(self, pid: int, eng: _Engine, now_ns: int) -> list[Sample]:
        urls = [eng.url] if eng.url else eng.found.urls
        for url in urls:
            try:
                scrape = parse(fetch(url, self.config.timeout_s), eng.found.kind)
            except ScrapeError as exc:
                eng.error = str(exc)
                continue
            eng.url, eng.error, eng.last, eng.last_ns = url, "", scrape, now_ns
            eng.scrapes += 1
            eng.history.append((now_ns, {k: (h.bounds, h.cumulative) for k, h in scrape.histograms.items()}))
            return self._samples(pid, eng.found.kind.name, scrape, now_ns)
        if eng.url:  # the endpoint it had stopped answering: look again from the start next time
            eng.url = ""
        return []

    @staticmethod
    def _samples(pid: int, kind: str, scrape: Scrape, now_ns: int) -> list[Sample]:
        labels = {"pid": str(pid), "engine": kind}
        out = [Sample(f"engine.{k}", now_ns, v, labels) for k, v in scrape.gauges.items()]
        for name, h in scrape.histograms.items():
            out += [Sample(f"engine.{name}_s.bucket", now_ns, c, {**labels, "le": f"{b:g}"})
                    for b, c in zip(h.bounds, h.cumulative)]
            out += [Sample(f"engine.{name}_s.count", now_ns, h.count, labels),
                    Sample(f"engine.{name}_s.sum", now_ns, h.sum, labels)]
        return out

    def _window(self, eng: _Engine, now_ns: int) -> dict[str, tuple[list[float], list[float]]]:
        """Per histogram: bounds and the counts of requests finished within the window (latest - oldest)."""
        lo = now_ns - int(self.config.window_s * 1e9)
        while len(eng.history) > 1 and eng.history[1][0] <= lo:
            eng.history.popleft()
        if not eng.history:
            return {}
        (_, first), (_, last) = eng.history[0], eng.history[-1]
        out = {}
        for name, (bounds, cum) in last.items():
            old = first.get(name)
            base = old[1] if old is not None and old[0] == bounds and len(eng.history) > 1 else [0.0] * len(cum)
            out[name] = (bounds, [max(0.0, a - b) for a, b in zip(cum, base)])
        return out

    def _snapshot(self, now_ns: int) -> EnginesSnapshot:
        engines = {}
        for pid, eng in self._engines.items():
            f, s = eng.found, eng.last
            d = DiscoveredEngine(f.kind.name, f.comm, " ".join(f.cmdline)[:200], list(f.child_pids), eng.url,
                                 eng.error, eng.last_ns, eng.scrapes, window_s=self.config.window_s)
            if s is not None:
                for key in GAUGES:
                    setattr(d, key, s.gauges.get(key))
                for name, (bounds, counts) in self._window(eng, now_ns).items():
                    if name in ("e2e", "ttft") and counts:  # requests finished in the window
                        d.requests_in_window = max(d.requests_in_window, counts[-1])
                    for q, tag in ((0.5, "p50"), (0.99, "p99")):
                        if hasattr(d, f"{name}_{tag}_s"):
                            setattr(d, f"{name}_{tag}_s", quantile(bounds, counts, q))
            engines[pid] = d
        watch = sorted({p for pid, e in self._engines.items() for p in (pid, *e.found.child_pids)}) \
            if self.config.is_watching else []
        return EnginesSnapshot(now_ns, self._scans, engines, watch)

    def stop(self) -> None:
        self._is_started = False
        self._engines.clear()
        self.set_status(ProbeState.STOPPED, "stopped")
