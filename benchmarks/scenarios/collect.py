"""After a window: the requests that overlapped it and a sample of the clean ones before it, each with what the
load generator saw (the truth of its latency) and what the agent's `explain` said."""
from __future__ import annotations

import statistics
from typing import Any

from agentq import AgentQuery
from shapes import normalize

RECOVERY_S = 1.5  # after a fault ends, requests this long are neither fault nor clean
CLEAN_SAMPLE = 8  # clean requests explained per window (false alarms)
MAX_EXAMPLE_EVENTS = 80
POOL = 40  # clean requests the normal latency is the median of


def is_slowed(excess_ms: float, expected_ms: float) -> bool:
    """The contract's threshold for an excess worth explaining: >= max(20 % of expected, 5 ms)."""
    return excess_ms >= max(0.2 * expected_ms, 5.0)


def e2e_ms(rec: dict[str, Any]) -> float:
    return (rec["t_done_ns"] - rec["t_send_ns"]) / 1e6


def is_ok(rec: dict[str, Any]) -> bool:
    return not rec["error"] and rec["status"] == 200 and rec["id"] is not None


def clean_requests(records: list[dict], lo_ns: int, hi_ns: int) -> list[dict]:
    """Steady requests that started and finished inside [lo_ns, hi_ns]."""
    return [r for r in records if is_ok(r) and r["tag"] == "steady" and r["t_send_ns"] >= lo_ns
            and r["t_done_ns"] <= hi_ns]


def _explained(q: AgentQuery, rec: dict, known: set[str], expected_ms: float) -> dict[str, Any]:
    e2e = e2e_ms(rec)
    excess = e2e - expected_ms
    out = {"id": rec["id"], "tag": rec["tag"], "t_send_ns": rec["t_send_ns"], "t_done_ns": rec["t_done_ns"],
           "e2e_ms": round(e2e, 2), "excess_ms": round(excess, 2), "expected_ms": round(expected_ms, 2),
           "slowed": is_slowed(excess, expected_ms), "error": rec["error"], "in_agent": False, "verdicts": []}
    if rec["t_first_ns"]:
        out["ttft_ms"] = round((rec["t_first_ns"] - rec["t_send_ns"]) / 1e6, 2)
    if is_ok(rec) and rec["id"] in known:
        report = q.explain(rec["id"])
        if report is not None:
            out["in_agent"] = True
            out["verdicts"] = normalize(report, (excess, expected_ms))[:3]
            budget = report.get("budget") if isinstance(report.get("budget"), dict) else {}
            out.update({f"agent_{k}": budget[k] for k in ("excess_ms", "unexplained_ms") if k in budget})
            out["_report"] = report
    return out


def trim_report(report: dict[str, Any]) -> dict[str, Any]:
    """What the timeline plot needs of one explain answer: phases, verdicts, the longest evidence events."""
    events = sorted(report.get("overlapping") or [], key=lambda e: e["end_ns"] - e["start_ns"], reverse=True)
    return {"request": report.get("request"), "phases": report.get("phases"), "verdicts": report.get("verdicts"),
            "budget": report.get("budget"), "overlapping": events[:MAX_EXAMPLE_EVENTS]}


def collect(q: AgentQuery, records: list[dict], win: dict[str, Any], expected: dict[str, float],
            pool: list[float], keep_example: bool) -> None:
    """Fill `win` with requests (overlapping the fault), clean (sampled before it) and an example report.
    The normal e2e of steady requests is the median of the scenario's last POOL clean ones (`pool`, this window's
    clean gap added first: one short gap on a shared box is too noisy alone); burst shapes use `expected`."""
    onset, end = win["onset_ns"], win["end_ns"]
    clean = clean_requests(records, win["gap_start_ns"] + int(RECOVERY_S * 1e9), win["gap_end_ns"])
    pool += [e2e_ms(r) for r in clean]
    if pool:
        expected["steady"] = statistics.median(pool[-POOL:])
    win["is_expected_stale"] = not pool  # no clean request yet in this scenario: the last scenario's normal
    assert "steady" in expected, f"no clean request before {win['scenario']} {win['level']}: is the engine serving?"
    win["expected_e2e_ms"] = round(expected["steady"], 2)
    win["num_clean_gap"] = len(clean)
    known = {row["request_id"] for row in q.requests(5000)}
    hit = [r for r in records if r["t_send_ns"] < end and r["t_done_ns"] > onset]
    win["requests"] = [_explained(q, r, known, expected.get(r["tag"], expected["steady"])) for r in hit]
    step = max(1, len(clean) // CLEAN_SAMPLE)
    win["clean"] = [_explained(q, r, known, expected["steady"]) for r in clean[::step][:CLEAN_SAMPLE]]
    with_report = [r for r in win["requests"] if "_report" in r]
    if keep_example and with_report:
        worst = max(with_report, key=lambda r: r["excess_ms"])
        win["example"] = {"id": worst["id"], "report": trim_report(worst["_report"])}
    for r in win["requests"] + win["clean"]:
        r.pop("_report", None)
