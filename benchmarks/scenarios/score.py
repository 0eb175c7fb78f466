"""Scores per scenario x intensity, from the windows' records: did the agent name the cause, the culprit, how much
of the slowdown, how soon; and on clean requests, how often it cried wolf. Busy-host windows (others using
>= hostcpu.BUSY_CORES) are scored apart from quiet ones, never dropped.

Definitions (the report repeats them):
- slowed request: end-to-end latency (as the load generator saw it) exceeds the normal one by
  >= max(20 %, 5 ms); only slowed requests are scored. A window with none "had no effect" and is no miss.
- top-1 / top-3: the truth cause is the first / among the first three verdicts.
- culprit: the first verdict with the truth cause names an accepted identity (pid, interface, rank, GPU).
- attributed: explained ms of the truth-cause verdicts / measured excess ms (median over slowed requests).
- detection: seconds from onset to the first agent output naming the cause (event, incident or verdict).
- false alarm: a clean request whose top verdict is "likely" (shapes.is_likely).
"""
from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from shapes import culprit_ok


def _mean(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 3) if flags else None


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def _p90(xs: list[float]) -> float | None:
    return round(sorted(xs)[min(len(xs) - 1, int(0.9 * len(xs)))], 3) if xs else None


def is_effective(win: dict[str, Any]) -> bool:
    """The fault happened and slowed at least one request (observe-only faults: only where triggered)."""
    if win["injected"].get("triggered") is False:
        return False
    return any(r["slowed"] for r in win["requests"])


def request_scores(pairs: list[tuple[dict, dict]], cause: str) -> dict[str, Any]:
    """Scores over slowed requests, each given with its window's ground-truth culprit."""
    top1, top3, culprit, attributed = [], [], [], []
    for r, truth in pairs:
        causes = [v["cause"] for v in r["verdicts"]]
        top1.append(bool(causes) and causes[0] == cause)
        top3.append(cause in causes[:3])
        first = next((v for v in r["verdicts"] if v["cause"] == cause), None)
        culprit.append(culprit_ok(first and first["culprit"], truth))
        got = sum(v["explained_ms"] for v in r["verdicts"] if v["cause"] == cause)
        attributed.append(got / r["excess_ms"] if r["excess_ms"] > 0 else 0.0)
    return {"top1": _mean(top1), "top3": _mean(top3), "culprit": _mean(culprit),
            "attributed": _median(attributed)}


def score_group(wins: list[dict[str, Any]]) -> dict[str, Any]:
    """One row: windows of one scenario x intensity (x host state)."""
    cause = wins[0]["cause"]
    eff = [w for w in wins if is_effective(w)]
    slowed = [(w, r) for w in eff for r in w["requests"] if r["slowed"] and not r["error"]]
    ratios = [statistics.median(r["e2e_ms"] / max(1e-3, r["expected_ms"]) for r in w["requests"] if not r["error"])
              for w in wins if any(not r["error"] for r in w["requests"])]
    clean = [r for w in wins for r in w["clean"] + (w["requests"] if cause is None else []) if r["in_agent"]]
    row = {"windows": len(wins), "busy_windows": sum(bool(w["host"]["is_busy"]) for w in wins),
           "effective": len(eff), "requests": sum(len(w["requests"]) for w in wins),
           "slowed": len(slowed), "failed": sum(1 for w in wins for r in w["requests"] if r["error"]),
           "not_in_agent": sum(1 for w in wins for r in w["requests"] if not r["in_agent"] and not r["error"]),
           "slowdown_x": _median(ratios), "excess_ms": _median([r["excess_ms"] for _, r in slowed]),
           "false_alarm": _mean([_is_alarm(r) for r in clean]),
           "clean_requests": len(clean), "others_cores": _median([w["host"]["others_cores"] for w in wins]),
           "injected": _injected(wins)}
    if cause is None:
        return row
    row.update(request_scores([(r, w["culprit"]) for w, r in slowed], cause) if slowed else {})
    shares = [r["agent_unexplained_ms"] / r["agent_excess_ms"] for _, r in slowed
              if r.get("agent_excess_ms") and "agent_unexplained_ms" in r]
    row["unexplained"] = _median(shares)  # the agent's own unexplained share of its excess (contract agents)
    det = [w["named"][cause]["s"] for w in eff if cause in w["named"]]
    row.update(detected=_mean([cause in w["named"] for w in eff]), detect_p50_s=_median(det),
               detect_p90_s=_p90(det), top_wrong=Counter(r["verdicts"][0]["cause"] if r["verdicts"] else "none"
                                                         for _, r in slowed).most_common(3))
    return row


def _injected(wins: list[dict]) -> dict[str, float]:
    """Median of each numeric fact measured about the injection (hog CPU share, held ms, throttled ms...)."""
    keys = {k for w in wins for k, v in w["injected"].items() if isinstance(v, (int, float))
            and not isinstance(v, bool)}
    return {k: _median([w["injected"][k] for w in wins if k in w["injected"]]) for k in sorted(keys)}


def score_all(results: dict[str, Any]) -> dict[str, Any]:
    """{rows: [{scenario, level, host, ...scores}], clean: overall false alarms, spurious naming}."""
    groups: dict[tuple, list] = defaultdict(list)
    for w in results["windows"]:
        groups[(w["scenario"], w["level"])].append(w)
    rows = []
    for (name, level), wins in groups.items():
        for host, sel in (("all", wins), ("quiet", [w for w in wins if not w["host"]["is_busy"]]),
                          ("busy", [w for w in wins if w["host"]["is_busy"]])):
            if sel and (host == "all" or len(sel) < len(wins)):
                rows.append({"scenario": name, "level": level, "cause": wins[0]["cause"], "host": host,
                             **score_group(sel)})
    return {"rows": rows, "clean": clean_summary(results["windows"])}


def _clean_of(windows: list[dict]) -> list[dict]:
    return [r for w in windows for r in w["clean"] + (w["requests"] if w["cause"] is None else []) if r["in_agent"]]


def _is_alarm(r: dict) -> bool:
    return bool(r["verdicts"]) and r["verdicts"][0]["likely"]


def clean_summary(windows: list[dict]) -> dict[str, Any]:
    """False alarms over every clean request explained (and over those of quiet-host windows alone: on a busy
    host a clean request may really have waited for other tenants), which causes they named, and which causes the
    agent named in clean windows at all (spurious events/incidents/verdicts)."""
    clean = _clean_of(windows)
    quiet = _clean_of([w for w in windows if not w["host"]["is_busy"]])
    alarms = [r for r in clean if _is_alarm(r)]
    clean_wins = [w for w in windows if w["cause"] is None]
    named = Counter(c for w in clean_wins for c in w["named"])
    return {"requests": len(clean), "false_alarm": _mean([_is_alarm(r) for r in clean]),
            "quiet_requests": len(quiet), "false_alarm_quiet": _mean([_is_alarm(r) for r in quiet]),
            "any_verdict": _mean([bool(r["verdicts"]) for r in clean]),
            "alarm_causes": Counter(r["verdicts"][0]["cause"] for r in alarms).most_common(),
            "clean_windows": len(clean_wins),
            "named_in_clean_windows": {c: round(n / len(clean_wins), 3) for c, n in named.most_common()}}


def window_line(win: dict[str, Any]) -> str:
    """One progress line per window."""
    ok = [r for r in win["requests"] if not r["error"]]
    slowed = [r for r in ok if r["slowed"]]
    hit = sum(1 for r in slowed if r["verdicts"] and r["verdicts"][0]["cause"] == win["cause"])
    det = win["named"].get(win["cause"] or "", {}).get("s")
    ratio = statistics.median(r["e2e_ms"] / max(1e-3, r["expected_ms"]) for r in ok) if ok else 0.0
    return (f"{win['scenario']:>15} {win['level']:<5} #{win['rep']}: {len(slowed)}/{len(win['requests'])} slowed "
            f"x{ratio:.2f}, top-1 {hit}/{len(slowed)}, detected {det if det is not None else '-'} s, "
            f"others {win['host']['others_cores']:.2f} cores, injected {win['injected']}")
