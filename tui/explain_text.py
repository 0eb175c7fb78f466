"""A request's `explain` answer as text: the compact pane under the Requests table (budget line and top verdict,
wrapped, never cut) and the full report of the detail view (every part, every verdict, culprit, runbook)."""
from __future__ import annotations

import textwrap
from typing import Any

from rich.text import Text

from gpusleuth.tui import fmt

INDENT = "   "


def _ms(v: float | None) -> str:
    return fmt.DASH if v is None else fmt.dur_ns(v * 1e6)


def culprit_text(c: dict[str, Any]) -> str:
    """`hog-fifo (pid 22644, tid 22644) cpu 1`, plus what else the culprit carries."""
    if not c:
        return "—"
    head = f"{c.get('comm', '?')} (pid {c.get('pid', '?')}" + (f", tid {c['tid']}" if c.get("tid") else "") + ")"
    more = [f"{k} {c[k]}" for k in ("cgroup", "gpu", "rank", "interface", "cpu", "syscall", "share") if k in c]
    if c.get("request_ids"):
        more.append("requests " + ", ".join(c["request_ids"][:3]) + (" …" if len(c["request_ids"]) > 3 else ""))
    return head + (" " + ", ".join(more) if more else "")


def head_line(r: dict[str, Any]) -> Text:
    return Text.assemble((f"{r.get('request_id', '?')}", "bold"), f"  e2e {fmt.dur_s(r.get('e2e_s'))}"
                         f"  TTFT {fmt.dur_s(r.get('ttft_s'))}  TPOT {fmt.dur_s(r.get('tpot_s'))}"
                         f"  queue {fmt.dur_s(r.get('queue_s'))}  {r.get('prompt_tokens') or '—'}→"
                         f"{r.get('output_tokens') or '—'} tok  {r.get('status') or ''}")


def budget_line(b: dict[str, Any]) -> Text:
    """`budget 660ms, expected 119ms, excess 541ms: decode +492ms prefill +41ms …` (parts by excess)."""
    if not b:
        return Text("budget: none (the agent has not diagnosed this request)", style="dim")
    line = Text.assemble(("budget ", "bold"), f"{_ms(b.get('actual_ms'))}, expected {_ms(b.get('expected_ms'))}, ",
                         (f"excess {_ms(b.get('excess_ms'))}", "bold yellow" if b.get("is_slow") else ""))
    parts = sorted(b.get("parts") or [], key=lambda p: -(p.get("excess_ms") or 0))
    shown = [f"{p['part']} +{_ms(p['excess_ms'])}" for p in parts if (p.get("excess_ms") or 0) >= 0.05][:4]
    if shown:
        line.append(": " + "  ".join(shown))
    if parts and all(p.get("baseline") == "none" for p in parts):
        line.append("  (no baseline yet)", style="dim")
    return line


def _wrap(text: str, width: int, indent: str = INDENT) -> list[str]:
    return textwrap.wrap(text, max(20, width), initial_indent=indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False) or [indent]


def verdict_text(v: dict[str, Any], rank: int, width: int = 80) -> Text:
    """One verdict in full, wrapped to `width`: cause and share, culprit, evidence, and the runbook path, which is
    never broken (on its own line when it does not fit after the label)."""
    tag = ("likely", "bold red") if v.get("is_likely") else ("possible", "yellow")
    lines = [Text.assemble((f"{rank}. {v.get('cause', '?')}", "bold"), f" {_ms(v.get('explained_ms'))}, "
                           f"{v.get('share', 0):.0%} of the excess ", tag)]
    lines += [Text(line, style="bold") for line in _wrap("culprit: " + culprit_text(v.get("culprit") or {}), width)]
    lines += [Text(line) for line in _wrap(str(v.get("evidence", "")), width)]
    path = str(v.get("runbook", ""))
    if len(INDENT + "runbook: " + path) <= width:
        lines.append(Text.assemble(INDENT + "runbook: ", (path, "cyan")))
    else:
        lines += [Text(INDENT + "runbook:"), Text(path, style="cyan")]
    return Text("\n").join(lines)


def no_verdict_text(detail: dict[str, Any]) -> Text:
    b = detail.get("budget") or {}
    parts = b.get("parts") or []
    if parts and all(p.get("baseline") == "none" for p in parts):
        return Text("no causes looked for: no baseline yet (the engine has not run enough clean steps)", style="dim")
    if detail.get("notes"):
        return Text("; ".join(map(str, detail["notes"].values())), style="dim")
    return Text("no cause found" + ("" if b.get("is_slow") else ": the request was not slower than usual"),
                style="dim")


def summary_text(detail: dict[str, Any], width: int = 80) -> Text:
    """The pane by the table (whose row already shows the request's figures): budget, the top verdict in full."""
    verdicts = detail.get("verdicts") or []
    lines = [budget_line(detail.get("budget") or {})]
    lines.append(verdict_text(verdicts[0], 1, width) if verdicts else no_verdict_text(detail))
    if len(verdicts) > 1:
        lines.append(Text(f"+{len(verdicts) - 1} more verdicts · enter: full report, c: run the runbook's checks",
                          style="dim"))
    else:
        lines.append(Text("enter: full report with phases and host events, c: run the runbook's checks",
                          style="dim"))
    return Text("\n").join(lines)


def report_text(detail: dict[str, Any], width: int = 80) -> Text:
    """The detail view: head, every verdict (the why first), unexplained time, then the budget table."""
    b = detail.get("budget") or {}
    verdicts = detail.get("verdicts") or []
    lines = [head_line(detail.get("request") or {}), budget_line(b), Text("")]
    lines += [verdict_text(v, i, width) for i, v in enumerate(verdicts, 1)] or [no_verdict_text(detail)]
    if b:
        lines.append(Text(f"unexplained: {_ms(b.get('unexplained_ms'))} "
                          f"({(b.get('unexplained_share') or 0):.0%} of the excess)", style="dim"))
    lines.append(Text(""))
    if b.get("parts"):
        lines.append(Text(f"  {'part':<9}{'actual':>10}{'expected':>10}{'excess':>10}  steps  baseline",
                          style="bold"))
        for p in b["parts"]:
            steps = f"{p.get('steps', 0)}" + (f"+{p['waited_steps']}w" if p.get("waited_steps") else "")
            lines.append(Text(f"  {p['part']:<9}{_ms(p['actual_ms']):>10}{_ms(p['expected_ms']):>10}"
                              f"{_ms(p['excess_ms']):>10}  {steps:<6} {p.get('baseline', '')}"))
        lines.append(Text(f"  {'total':<9}{_ms(b.get('actual_ms')):>10}{_ms(b.get('expected_ms')):>10}"
                          f"{_ms(b.get('excess_ms')):>10}", style="bold"))
    return Text("\n").join(lines)
