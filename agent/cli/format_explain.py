"""Text for `agent explain`: a request's budget table and its causes with evidence and runbook; a window's slow
requests and the causes they share."""
from __future__ import annotations

import textwrap
from collections import Counter
from typing import Any

WIDTH = 110


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:,.1f}"


def _budget_lines(b: dict[str, Any]) -> list[str]:
    lines = [f"  {'part':<9}{'actual ms':>11}{'expected':>10}{'excess':>10}  steps  baseline"]
    for p in b.get("parts") or []:
        steps = f"{p['steps']}" + (f" (+{p['waited_steps']} waited)" if p.get("waited_steps") else "")
        lines.append(f"  {p['part']:<9}{_ms(p['actual_ms']):>11}{_ms(p['expected_ms']):>10}"
                     f"{_ms(p['excess_ms']):>10}  {steps:<6} {p.get('baseline', '')}")
    lines.append(f"  {'total':<9}{_ms(b.get('actual_ms')):>11}{_ms(b.get('expected_ms')):>10}"
                 f"{_ms(b.get('excess_ms')):>10}")
    return lines


def _culprit(c: dict[str, Any]) -> str:
    head = f"{c.get('comm', '?')} (pid {c.get('pid', 0)}" + (f", tid {c['tid']}" if c.get("tid") else "") + ")"
    more = [f"{k} {c[k]}" for k in ("cgroup", "gpu", "rank", "interface", "cpu", "syscall", "share") if k in c]
    if c.get("request_ids"):
        more.append("requests " + ", ".join(c["request_ids"][:5]))
    return head + (": " + ", ".join(more) if more else "")


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent) or [indent]


def format_report(r: dict[str, Any]) -> str:
    """One request: head line, budget table, causes best first, unexplained."""
    req, b = r.get("request") or {}, r.get("budget") or {}
    excess = b.get("excess_ms") or 0.0
    lines = [f"request {req.get('request_id', '?')} (engine pid {req.get('pid', '?')}): "
             f"{_ms(b.get('actual_ms'))} ms, expected {_ms(b.get('expected_ms'))} ms, excess {_ms(excess)} ms",
             "", *_budget_lines(b), ""]
    verdicts = r.get("verdicts") or []
    if not verdicts:
        parts = b.get("parts") or []
        if parts and all(p.get("baseline") == "none" for p in parts):
            lines.append("causes: none looked for: no baseline yet (the engine has not run enough clean steps to "
                         "know what its normal is)")
        else:
            lines.append("causes: none found"
                         + ("" if b.get("is_slow") else " (the request was not slower than usual)"))
    for i, v in enumerate(verdicts, 1):
        tag = "  likely" if v.get("is_likely") else ""
        lines.append(f"{i}. {v['cause']}: {_ms(v['explained_ms'])} ms, {v['share']:.0%} of the excess{tag}")
        lines += _wrap("culprit: " + _culprit(v.get("culprit") or {}), "   ")
        lines += _wrap(v.get("evidence", ""), "   ")
        lines.append(f"   runbook: {v.get('runbook', '')}")
    share = b.get("unexplained_share") or 0.0
    lines.append(f"unexplained: {_ms(r.get('unexplained_ms'))} ms ({share:.0%} of the excess)")
    return "\n".join(lines)


def format_window(rows: list[dict[str, Any]], tally: Counter, window: str) -> str:
    """A window's slow requests (one line each, slowest first) and their top causes."""
    if not rows:
        return f"no slow requests in the last {window}"
    lines = [f"{len(rows)} slow requests in the last {window}; top causes:"]
    for cause, n in tally.most_common():
        total = sum(r["excess_ms"] for r in rows if (r["cause"] or "unexplained") == cause)
        lines.append(f"  {cause:<20} {n:>5} requests  {_ms(total)} ms excess")
    lines += ["", f"  {'request':<40}{'actual ms':>11}{'excess':>10}  top cause (share)"]
    for r in sorted(rows, key=lambda r: r["excess_ms"], reverse=True):
        cause = f"{r['cause']} ({r['share']:.0%})" if r["cause"] else "—"
        lines.append(f"  {r['request_id']:<40}{_ms(r['actual_ms']):>11}{_ms(r['excess_ms']):>10}  {cause}")
    return "\n".join(lines)
