"""Running a runbook's checks: each asks one source (the agent's control socket or a recording through `call`, a
Prometheus server through `promql`), reduces the answer to one figure and says whether it confirms the fault."""
from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from gpusleuth.runbooks.book import WINDOW_PARAM, Check, Runbook

SHOWN_KEYS = ("kind", "cause", "probe", "state", "reason", "comm", "pid", "tid", "request_id")


class SourceUnavailable(Exception):
    """The check's source is not there (no --prometheus given, no agent): the check is skipped, not failed."""


class Sources(Protocol):
    def call(self, method: str, **params: Any) -> Any:
        """A control method's answer (live agent or recording)."""

    def promql(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's (labels, value) pairs."""

    def now_ns(self) -> int:
        """The instant windows end at (CLOCK_MONOTONIC ns: now, or a recording's end)."""


@dataclass(slots=True)
class CheckResult:
    check: Check
    status: str  # fail (the figure confirms the fault), pass, skip (source not there), error (it answered badly)
    figure: float | None = None
    detail: str = ""

    @property
    def step(self) -> str:
        """The next step to show: the check's `next` when it confirms the fault, its `ok` text otherwise."""
        return self.check.next if self.status == "fail" else self.check.ok

    def to_dict(self) -> dict[str, Any]:
        c = self.check
        return {"name": c.name, "source": c.source, "query": c.query, "status": self.status, "figure": self.figure,
                "unit": c.unit, "fault_if": f"{c.fault_op} {c.fault_value:g}", "confirms_fault": self.status == "fail",
                "detail": self.detail, "next": self.step}


class Prometheus:
    """Instant queries against a Prometheus server's HTTP API (stdlib: one GET per check, nothing to pool)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"Prometheus answered {exc.code}: {exc.read().decode(errors='replace')[:300]}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise SourceUnavailable(f"Prometheus at {self.url} not reachable ({exc})") from None
        data = body.get("data") or {}
        if data.get("resultType") == "scalar":
            return [({}, float(data["result"][1]))]
        return [(r.get("metric", {}), float(r["value"][1])) for r in data.get("result", [])]


def get(item: Any, path: str) -> Any:
    """`attrs.culprit.comm` of a nested dict (None where absent)."""
    for part in path.split(".") if path else ():
        item = item.get(part) if isinstance(item, dict) else None
    return item


def _items(answer: Any, path: str) -> list[Any]:
    answer = get(answer, path) if path else answer
    if isinstance(answer, dict):
        items = [{"_key": k, **v} if isinstance(v, dict) else {"_key": k, "value": v} for k, v in answer.items()]
    else:
        items = list(answer or [])
    for i in items:  # events: their duration, which the control socket leaves to the reader
        if isinstance(i, dict) and "start_ns" in i and "end_ns" in i and "duration_ns" not in i:
            i["duration_ns"] = i["end_ns"] - i["start_ns"]
    return items


def _matches(item: Any, where: dict[str, Any]) -> bool:
    for path, want in where.items():
        value = get(item, path)
        if value not in (want if isinstance(want, list) else [want]):
            return False
    return True


def _describe(item: Any) -> str:
    if isinstance(item, dict) and "labels" in item and "value" in item and len(item) == 2:
        return "{" + ", ".join(f"{k}={v}" for k, v in sorted(item["labels"].items())) + "}"
    if not isinstance(item, dict):
        return str(item)
    shown = {k: item[k] for k in ("_key", *SHOWN_KEYS) if item.get(k) not in (None, "")}
    culprit = item.get("culprit") or get(item, "attrs.culprit") or (get(item, "attrs.culprits") or [None])[0]
    if isinstance(culprit, dict) and culprit.get("comm"):
        shown["culprit"] = f"{culprit.get('comm')} (pid {culprit.get('pid')})"
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def reduce(check: Check, items: list[Any], value: Callable[[Any], Any], now_ns: int = 0) -> tuple[float | None, str]:
    """The figure (scaled) of `items` and the item it came from (`now_ns`: what `age` counts back from)."""
    if check.figure_op == "count":
        return len(items) * check.scale, _describe(items[0]) if items else ""
    pairs = [(float(v), i) for i in items if isinstance(v := value(i), (int, float)) and not math.isnan(float(v))]
    if not pairs:
        return (0.0, "") if check.figure_op == "sum" else (None, "no data")
    if check.figure_op == "sum":
        return sum(v for v, _ in pairs) * check.scale, f"{len(pairs)} items"
    if check.figure_op == "age":
        newest = max(pairs, key=lambda p: p[0])
        return (now_ns - newest[0]) * check.scale, _describe(newest[1])
    chosen = {"max": max, "min": min}.get(check.figure_op, lambda ps, key: ps[-1])(pairs, key=lambda p: p[0])
    return chosen[0] * check.scale, _describe(chosen[1])


def _control(check: Check, sources: Sources) -> tuple[float | None, str]:
    params = dict(check.params)
    method = "diagnoses" if check.source == "explain" else check.query
    if check.window_s is not None:
        params[WINDOW_PARAM[method]] = sources.now_ns() - int(check.window_s * 1e9)
    if check.source == "explain":
        slowest = sources.call("diagnoses", **{"slowest": 1, **params})
        if not slowest:
            return None, "no diagnosed request in the window"
        rid = slowest[0]["request_id"]
        answer = sources.call("explain", request_id=rid)
        items = [v for v in answer.get("verdicts", []) if _matches(v, check.where)]
        figure, detail = reduce(check, items, lambda i: get(i, check.figure_field), sources.now_ns())
        return figure, f"request {rid}, excess {slowest[0].get('excess_ms')} ms" + (f"; {detail}" if detail else "")
    items = [i for i in _items(sources.call(method, **params), check.items) if _matches(i, check.where)]
    return reduce(check, items, lambda i: get(i, check.figure_field), sources.now_ns())


def run_check(check: Check, sources: Sources) -> CheckResult:
    """One check's figure and status; a missing source is a skip, an answer we cannot use an error."""
    try:
        if check.source == "promql":
            series = [{"labels": labels, "value": v} for labels, v in sources.promql(check.query)]
            figure, detail = reduce(check, series, lambda i: i["value"])
        else:
            figure, detail = _control(check, sources)
    except SourceUnavailable as exc:
        return CheckResult(check, "skip", detail=str(exc))
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        return CheckResult(check, "error", detail=f"{type(exc).__name__}: {exc}")
    status = "fail" if figure is not None and check.is_fault(figure) else "pass"
    return CheckResult(check, status, figure, detail)


def run(runbook: Runbook, sources: Sources) -> list[CheckResult]:
    """Every check of `runbook`, in order."""
    return [run_check(c, sources) for c in runbook.checks]
