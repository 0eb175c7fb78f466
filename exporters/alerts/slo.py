"""Request SLOs on the engine's own histograms (vLLM's names): time to first token and inter-token latency.

Multiwindow, multi-burn-rate alerts as in the Google SRE workbook ("Alerting on SLOs", recommendation 6): the error
ratio (share of requests, or of token gaps, slower than the threshold) over a long and a short window, against
burn rates 14.4 (1 h / 5 m) and 6 (6 h / 30 m) that page, and 3 (1 d / 2 h) and 1 (3 d / 6 h) that open a ticket.
"""
from __future__ import annotations

from prometheus_client.utils import floatToGoString

from gpusleuth.exporters.alerts.model import Alert, Group, Recording, num
from gpusleuth.exporters.alerts.params import AlertParams

WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
PAGE = ((14.4, "1h", "5m"), (6.0, "6h", "30m"))  # (burn rate, long window, short window)
TICKET = ((3.0, "1d", "2h"), (1.0, "3d", "6h"))
BY = "job, instance, model_name"
SLOS = {  # slo -> (histogram, what is counted, threshold parameter)
    "ttft": ("vllm:time_to_first_token_seconds", "requests", "ttft_slo_seconds"),
    "itl": ("vllm:inter_token_latency_seconds", "token gaps", "itl_slo_seconds"),
}


def record_name(slo: str, window: str) -> str:
    """The recording rule holding the error ratio of `slo` over `window`."""
    return f"gpusleuth:{slo}_slo_errors:ratio_rate{window}"


def _recording(slo: str, p: AlertParams, window: str) -> Recording:
    hist, _, param = SLOS[slo]
    le, job = floatToGoString(getattr(p, param)), f'job="{p.engine_job}"'
    good = f'sum by ({BY}) (rate({hist}_bucket{{{job}, le="{le}"}}[{window}]))'
    total = f"sum by ({BY}) (rate({hist}_count{{{job}}}[{window}]))"
    return Recording(record_name(slo, window), f"1 - ({good} / {total})")


def _burn(slo: str, p: AlertParams, pairs: tuple[tuple[float, str, str], ...]) -> str:
    parts = []
    for rate, long, short in pairs:
        limit = num(rate * p.error_budget)
        parts.append(f"({record_name(slo, long)} > {limit} and {record_name(slo, short)} > {limit})")
    return " or ".join(parts)


def _alerts(slo: str, p: AlertParams) -> tuple[Alert, Alert]:
    hist, what, param = SLOS[slo]
    upper = slo.upper()
    threshold = f"{getattr(p, param):g} s"
    objective = f"{p.slo_objective * 100:g} %"
    runbook = f"slo-{slo}-burn"
    text = (f"{{{{ $value | humanizePercentage }}}} of the {what} of {{{{ $labels.model_name }}}} on "
            f"{{{{ $labels.instance }}}} were slower than {threshold} ({hist}); the SLO allows "
            f"{num(p.error_budget * 100)} % ({objective} objective).")
    page = Alert(f"Gpusleuth{upper}BudgetBurn", _burn(slo, p, PAGE), "2m", "critical",
                 f"{upper} error budget burning fast on {{{{ $labels.instance }}}}",
                 text + " At this rate the 30-day budget is gone in about two days.", runbook)
    ticket = Alert(f"Gpusleuth{upper}BudgetBurnSlow", _burn(slo, p, TICKET), "15m", "warning",
                   f"{upper} error budget burning on {{{{ $labels.instance }}}}",
                   text + " At this rate the 30-day budget runs out before the month does.", runbook)
    return page, ticket


def group(p: AlertParams) -> Group:
    """The SLO group: error ratios per window (recording rules) and the burn-rate alerts."""
    rules: list[Alert | Recording] = []
    for slo in SLOS:
        rules += [_recording(slo, p, w) for w in WINDOWS]
        rules += _alerts(slo, p)
    return Group("slo", tuple(rules))
