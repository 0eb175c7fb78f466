"""What engine discovery publishes each poll (`store.snapshot("engines")`): every engine process found, where its
metrics are, and the latest figures scraped from them."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class DiscoveredEngine:
    """One engine (the root process of its tree). Gauges and percentiles are None until a scrape has them;
    percentiles cover the requests finished in the last `window_s` (None when none did)."""

    kind: str = ""  # vllm, sglang, tgi, tensorrt-llm, triton
    comm: str = ""
    cmdline: str = ""  # shortened
    child_pids: list[int] = field(default_factory=list)
    metrics_url: str = ""  # "" while none answered
    scrape_error: str = ""  # why the last scrape failed ("" when it worked)
    last_scrape_ns: int = 0
    scrapes: int = 0
    num_running: float | None = None
    num_waiting: float | None = None
    kv_usage: float | None = None  # 0..1
    ttft_p50_s: float | None = None
    ttft_p99_s: float | None = None
    itl_p50_s: float | None = None
    itl_p99_s: float | None = None
    e2e_p50_s: float | None = None
    requests_in_window: float = 0.0
    window_s: float = 0.0


@dataclass(slots=True)
class EnginesSnapshot:
    t_ns: int = 0
    scans: int = 0  # process-table passes
    engines: dict[int, DiscoveredEngine] = field(default_factory=dict)  # by pid
    watch_pids: list[int] = field(default_factory=list)  # the engines and their children, for the kernel probes
