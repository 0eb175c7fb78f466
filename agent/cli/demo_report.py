"""What `agent demo --no-tui` prints: a live line every few seconds (a progress bar on the duration, requests done,
TTFT p50/p99, incidents so far) and, at the end, the load's outcome and the explanation of the three slowest
requests (most excess over what the engine normally takes: `agent explain --slowest 3`)."""
from __future__ import annotations

import json
import math
from typing import Any

from gpusleuth.agent.cli.format import format_status
from gpusleuth.agent.cli.format_explain import format_report
from gpusleuth.agent.cli.loadgen import LoadStats
from gpusleuth.agent.control.client import ControlClient, ControlError

BAR_W = 20
SLOWEST = 3


def bar(done_s: float, total_s: float, width: int = BAR_W) -> str:
    """`[██████░░░░░░░░░░░░░░]  18/60 s`."""
    frac = 0.0 if total_s <= 0 else min(1.0, max(0.0, done_s / total_s))
    full = int(frac * width)
    return f"[{'█' * full}{'░' * (width - full)}] {done_s:>4.0f}/{total_s:.0f} s"


def _pct(values: list[float], q: float) -> float | None:
    vals = sorted(values)
    return vals[min(len(vals) - 1, max(0, math.ceil(q * len(vals)) - 1))] if vals else None


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v * 1e3:.0f}ms"


class DemoWatch:
    """Reads the agent for the demo's figures since `start_ns` (its clock): finished requests, TTFT, incidents."""

    def __init__(self, client: ControlClient, start_ns: int) -> None:
        self.client = client
        self.start_ns = start_ns
        self._finished0 = self._finished_total()

    def _finished_total(self) -> int:
        spans = (self.client.call("snapshot", sources=["spans"]) or {}).get("spans") or {}
        return int(spans.get("finished_total", 0))

    def figures(self) -> dict[str, Any]:
        rows = [r for r in self.client.call("requests", limit=10 ** 6) if (r.get("end_ns") or 0) >= self.start_ns]
        ttft = [r["ttft_s"] for r in rows if r.get("ttft_s") is not None]
        try:
            incidents = self.client.call("incidents", since_ns=self.start_ns)
        except ControlError:  # an agent without the diagnosis
            incidents = []
        return {"finished": self._finished_total() - self._finished0, "ttft_p50_s": _pct(ttft, 0.5),
                "ttft_p99_s": _pct(ttft, 0.99), "ttft_basis": len(ttft), "incidents": incidents}

    def line(self, elapsed_s: float, duration_s: float, load: LoadStats) -> str:
        f = self.figures()
        open_causes = sorted({i["cause"] for i in f["incidents"] if i.get("is_open")})
        inc = f"incidents {len(f['incidents'])}" + (f" (open: {', '.join(open_causes)})" if open_causes else "")
        return (f"demo {bar(elapsed_s, duration_s)}  done {f['finished']} (sent {load.sent})  TTFT p50 "
                f"{_ms(f['ttft_p50_s'])} p99 {_ms(f['ttft_p99_s'])}  {inc}")

    def final(self, load: LoadStats) -> tuple[str, int]:
        """The closing report and the exit code (1: the agent saw no finished request)."""
        last = f" (last error: {load.last_error})" if load.failed else ""
        f = self.figures()
        out = [f"\ndemo: load sent {load.sent}, ok {load.ok}, rejected {load.rejected}, failed {load.failed}{last}; "
               f"the agent saw {f['finished']} finished requests, TTFT p50 {_ms(f['ttft_p50_s'])} "
               f"p99 {_ms(f['ttft_p99_s'])}, {len(f['incidents'])} incidents",
               format_status(self.client.call("status"))]
        for i in f["incidents"]:
            c = i.get("culprit") or {}
            out.append(f"incident {i['cause']} ({'open' if i.get('is_open') else 'ended'}): culprit "
                       f"{c.get('comm', '?')} (pid {c.get('pid', '?')}) -> {i.get('runbook', '')}")
        slowest = self.client.call("diagnoses", since_ns=self.start_ns, slowest=SLOWEST)
        reports = [r for r in (self._explain(d["request_id"]) for d in slowest) if r is not None]
        if not f["finished"]:
            out.append("demo: the agent saw no finished requests (are spans enabled?)")
        elif not reports:
            out.append("demo: no request diagnosed yet (the diagnosis waits for the kernel probes' evidence)")
        else:
            out.append(f"\nthe {len(reports)} slowest requests (most time over what this engine normally takes; "
                       f"`agent explain --slowest {SLOWEST}`):\n")
            out.append("\n\n".join(format_report(r) for r in reports))
        out.append(json.dumps({"requests_sent": load.sent, "requests_ok": load.ok, "requests_finished": f["finished"],
                               "incidents": len(f["incidents"]),
                               "slowest": [r["request"].get("request_id") for r in reports]}))
        return "\n".join(out), 0 if f["finished"] else 1

    def _explain(self, request_id: str) -> dict[str, Any] | None:
        try:
            return self.client.call("explain", request_id=request_id)
        except ControlError:  # it left the agent's recent requests meanwhile
            return None
