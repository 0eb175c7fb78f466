"""The parameters of the alert rules: SLO thresholds and objective, scrape jobs, thresholds, windows.

Defaults are what the shipped rule files use; README's "Alerts and runbooks" lists them. Each is a flag of
`python -m gpusleuth.exporters.alerts` (`ttft_slo_seconds` -> `--ttft-slo-seconds`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields

# The engine's (and vLLM's) histogram bounds: an SLO threshold must be one of them, since the burn rate is read
# from the cumulative bucket at that bound (engine/metrics.py _LATENCY and _ITL).
TTFT_BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0, 160.0, 640.0)
ITL_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4,
              0.5, 0.75, 1.0, 2.5, 5.0)
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


class ParamError(ValueError):
    """A parameter out of range; the message names it (as its command-line flag)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"--{name.replace('_', '-')}: {message}")


@dataclass(slots=True)
class AlertParams:
    """Everything a site may want to change in the rules; validated on construction."""

    runbook_base_url: str = "https://gpusleuth.example/runbooks"  # where your copy of runbooks/ is served
    agent_job: str = "gpusleuth-agent"  # `job` label of the agent's scrape (the PodMonitor sets it)
    engine_job: str = "gpusleuth-engine"  # `job` label of the engine's scrape
    ttft_slo_seconds: float = 1.0  # a request's time to first token is good when at most this
    itl_slo_seconds: float = 0.1  # an inter-token gap is good when at most this
    slo_objective: float = 0.99  # share of good requests (TTFT) / good gaps (ITL) promised
    gpu_busy_util_pct: float = 50.0  # throttling pages only on a GPU at least this busy
    gpu_ignored_comms: str = "nvidia-cuda-mps-server"  # processes that never count as sharing a GPU (regex)
    serving_interfaces: str = ".+"  # interfaces the network alerts look at (regex)
    microbursts_per_minute: float = 6.0
    retransmit_ratio: float = 0.01  # retransmitted TCP segments per packet sent on the serving interfaces
    min_packets_per_second: float = 100.0  # below this the retransmit ratio is noise
    span_drop_ratio: float = 0.01  # share of the engine's spans dropped
    incidents_per_hour: float = 6.0  # incidents of one cause per hour that count as recurring
    rate_window: str = "5m"  # window of rate()/increase() in the non-SLO alerts
    stall_window: str = "1m"  # window for "no spans at all" (the engine sends a heartbeat every 0.5 s)
    for_override: str = ""  # one `for:` for every alert (tests); empty keeps each alert's own

    def __post_init__(self) -> None:
        _check_bound("ttft_slo_seconds", self.ttft_slo_seconds, TTFT_BOUNDS)
        _check_bound("itl_slo_seconds", self.itl_slo_seconds, ITL_BOUNDS)
        if not 0.5 <= self.slo_objective < 1.0:
            raise ParamError("slo_objective", f"{self.slo_objective} is out of range; allowed 0.5 .. <1 (0.99 = 99 %)")
        for name in ("rate_window", "stall_window") + (("for_override",) if self.for_override else ()):
            if not _DURATION.match(getattr(self, name)):
                raise ParamError(name, f"{getattr(self, name)!r} is not a Prometheus duration (e.g. 30s, 5m, 1h)")
        for name in ("gpu_busy_util_pct", "microbursts_per_minute", "retransmit_ratio", "min_packets_per_second",
                     "span_drop_ratio", "incidents_per_hour"):
            if getattr(self, name) < 0:
                raise ParamError(name, f"{getattr(self, name)} is negative")
        for name in ("gpu_ignored_comms", "serving_interfaces"):
            try:
                re.compile(getattr(self, name))
            except re.error as exc:
                raise ParamError(name, f"not a regular expression: {exc}") from None
        self.runbook_base_url = self.runbook_base_url.rstrip("/")

    @property
    def error_budget(self) -> float:
        return 1.0 - self.slo_objective

    def runbook_url(self, runbook: str) -> str:
        """The URL of runbook `runbook` (a file stem of runbooks/, or a template that renders to one)."""
        return f"{self.runbook_base_url}/{runbook}.md"


def _check_bound(name: str, value: float, bounds: tuple[float, ...]) -> None:
    if value not in bounds:
        raise ParamError(name, f"{value:g} is not a bucket bound of the engine's histogram; use one of "
                               f"{', '.join(f'{b:g}' for b in bounds)}")


def names() -> list[str]:
    """The parameter names, in declaration order."""
    return [f.name for f in fields(AlertParams)]
