"""The pieces of bench_agent_load.py: a scraper that times /metrics, watched idle processes, process churn, a real
Prometheus, and the agent's resource readings. Each is a small object started and stopped by the benchmark."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench_agent_storm import cpu_seconds, rss_mb

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
SAMPLE_LINE = re.compile(rb"^[a-zA-Z_:][a-zA-Z0-9_:]*[{ ]", re.M)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Scrape:
    t: float
    seconds: float
    bytes: int
    samples: int
    fmt: str
    empty_comm: int
    error: str = ""


class Scraper:
    """GET /metrics every `interval_s`, text and OpenMetrics in turn, timing each."""

    def __init__(self, url: str, interval_s: float = 1.0) -> None:
        self.url, self.interval_s = url, interval_s
        self.scrapes: list[Scrape] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def scrape_once(self, fmt: str) -> Scrape:
        headers = {"Accept": OPENMETRICS} if fmt == "openmetrics" else {}
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(urllib.request.Request(self.url, headers=headers), timeout=10) as resp:
                body = resp.read()
        except OSError as exc:
            return Scrape(time.time(), time.perf_counter() - t0, 0, 0, fmt, 0, str(exc))
        dt = time.perf_counter() - t0
        return Scrape(time.time(), dt, len(body), len(SAMPLE_LINE.findall(body)), fmt, body.count(b'comm=""'))

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.interval_s):
            self.scrapes.append(self.scrape_once("openmetrics" if n % 2 else "text"))
            n += 1

    def summary(self) -> dict:
        ok = [s for s in self.scrapes if not s.error]
        out = {"scrapes": len(self.scrapes), "errors": len(self.scrapes) - len(ok)}
        for fmt in ("text", "openmetrics"):
            s = [x for x in ok if x.fmt == fmt]
            out[fmt] = {"p50_ms": percentile([x.seconds * 1e3 for x in s], 0.5),
                        "p99_ms": percentile([x.seconds * 1e3 for x in s], 0.99),
                        "max_ms": max((x.seconds * 1e3 for x in s), default=float("nan")),
                        "bytes_max": max((x.bytes for x in s), default=0),
                        "samples_max": max((x.samples for x in s), default=0),
                        "empty_comm_max": max((x.empty_comm for x in s), default=0)}
        return out


class IdleProcesses:
    """`count` python processes that wake every 50 ms (a syscall each), so the default `python*` watch holds them."""

    CODE = "import os, time\nwhile True:\n    time.sleep(0.05)\n    os.getppid()\n"

    def __init__(self, count: int) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", self.CODE], stdin=subprocess.DEVNULL)
                      for _ in range(count)]

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


class Churn:
    """A short-lived python child every `every_s` (new pids that the watch matches, then exit)."""

    def __init__(self, every_s: float) -> None:
        self.every_s, self.started = every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="churn", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            subprocess.run([sys.executable, "-c", "import os\nfor _ in range(200): os.getppid()"],
                           stdin=subprocess.DEVNULL)
            self.started += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Prometheus:
    """A real Prometheus scraping the agent at 1 s (Debian's `prometheus` package)."""

    tmp: Path
    target: str  # host:port
    port: int
    proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("prometheus") is not None

    def start(self) -> None:
        cfg = self.tmp / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                       f"scrape_configs:\n  - job_name: agent\n    static_configs:\n      - targets: ['{self.target}']\n")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / "prometheus.log", "w"), stdin=subprocess.DEVNULL)

    def query(self, expr: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)["data"]["result"]

    def up_summary(self, window_s: int) -> dict:
        def value(expr: str) -> float | None:
            try:
                res = self.query(expr)
            except OSError:
                return None
            return float(res[0]["value"][1]) if res else None
        w = f"[{window_s}s]"
        return {"window_s": window_s, "up_avg": value(f"avg_over_time(up{w})"),
                "up_min": value(f"min_over_time(up{w})"), "scrapes": value(f"count_over_time(up{w})"),
                "scrape_duration_max_s": value(f"max_over_time(scrape_duration_seconds{w})"),
                "samples_max": value(f"max_over_time(scrape_samples_scraped{w})")}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@dataclass
class ResourceLog:
    """The agent's RSS and CPU every `every_s`, for the maximum, the slope of the last 10 minutes and CPU share."""

    pid: int
    every_s: float = 5.0
    points: list[tuple[float, float, float]] = field(default_factory=list)  # (t, rss MB, cpu s)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resources", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.points.append((time.monotonic(), rss_mb(self.pid), cpu_seconds(self.pid)))
            except OSError:
                return
            if self._stop.wait(self.every_s):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        pts = self.points
        if len(pts) < 2:
            return {}
        t_end = pts[-1][0]
        last = [p for p in pts if p[0] >= t_end - 600]
        slope = _slope([(p[0], p[1]) for p in last])
        return {"rss_max_mb": max(p[1] for p in pts), "rss_first_mb": pts[0][1], "rss_last_mb": pts[-1][1],
                "rss_slope_last10min_mb_per_h": slope * 3600,
                "cpu_pct_of_core": 100 * (pts[-1][2] - pts[0][2]) / (pts[-1][0] - pts[0][0]),
                "points": [(round(p[0] - pts[0][0], 1), round(p[1], 1)) for p in pts[::max(1, len(pts) // 120)]]}


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (units of y per unit of x)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    den = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / den if den else 0.0
