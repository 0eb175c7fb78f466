"""The report of a results file: a one-page text table (scenario x intensity -> top-1, culprit, onset->detection,
false alarms; busy-host rows apart) and one timeline PNG per scenario. `python report.py RESULTS [--out-dir D]`."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import score  # noqa: E402
from hostcpu import BUSY_CORES  # noqa: E402
from shapes import LIKELY_SCORE, OLD_CAUSES  # noqa: E402

HEADER = (f"{'scenario':<15} {'level':<6} {'cause':<17} {'win':>3} {'eff':>3} {'q/b':>5} {'slowed':>6} "
          f"{'slow x':>6} {'top1':>5} {'top3':>5} {'culpr':>5} {'attrib':>6} {'detect':>6} {'p50 s':>5} "
          f"{'p90 s':>5} {'FA':>5} {'top1 quiet|busy':>15}")


def host_facts() -> dict[str, Any]:
    return {"node": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
            "mem_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version()}


def _f(x: Any, width: int, digits: int = 2) -> str:
    if x is None:
        return f"{'-':>{width}}"
    return f"{x:>{width}.{digits}f}" if isinstance(x, float) else f"{x:>{width}}"


def row_line(r: dict[str, Any], split: dict[str, dict]) -> str:
    """One scenario x intensity over all its windows; `split` holds its quiet and busy rows, where it has both."""
    quiet, busy = split.get("quiet"), split.get("busy")
    num_busy = r.get("busy_windows", 0)
    qb = f"{r['windows'] - num_busy}/{num_busy}"
    by_host = (f"{_f(quiet.get('top1'), 7)}|{_f(busy.get('top1'), 7)}" if quiet and busy else
               ("(all busy)" if num_busy else "(all quiet)"))
    return (f"{r['scenario']:<15} {r['level']:<6} {(r['cause'] or '-'):<17} {r['windows']:>3} {r['effective']:>3} "
            f"{qb:>5} {r['slowed']:>6} {_f(r['slowdown_x'], 6)} {_f(r.get('top1'), 5)} {_f(r.get('top3'), 5)} "
            f"{_f(r.get('culprit'), 5)} {_f(r.get('attributed'), 6)} {_f(r.get('detected'), 6)} "
            f"{_f(r.get('detect_p50_s'), 5, 1)} {_f(r.get('detect_p90_s'), 5, 1)} {_f(r['false_alarm'], 5)} "
            f"{by_host:>15}")


def table(results: dict[str, Any]) -> str:
    prov, opts, sc = results["provenance"], results["options"], results["scores"]
    lines = [f"gpusleuth fault suite: agent {prov.get('agent_commit', '?')} ({prov.get('agent_checkout')}), "
             f"{results['host']['node']} {results['host']['cpus']} CPUs, kernel {results['host']['kernel']}, "
             f"cgroup v{results['host'].get('cgroup_version')}, device {opts['device']}, {results['started']}",
             f"{len(results['windows'])} windows: {opts['repeat']} reps x {','.join(opts['intensity'])}, "
             f"{opts['fault_s']} s fault / {opts['gap_s']} s clean gap, {opts['rate']} req/s steady"
             + (" -- VERDICTS DELIBERATELY BROKEN" if opts.get("verdicts_broken") else "")]
    for i, run in enumerate(results.get("runs", [])[1:], start=1):
        names = sorted({w["scenario"] for w in results["windows"] if w.get("run") == i})
        lines.append(f"run {i} ({', '.join(names)}): agent {run['provenance'].get('agent_checkout')}, engine "
                     f"{run['provenance'].get('engine_checkout')}, {run['started']}")
    lines += ["", HEADER]
    rows = sc["rows"]
    for r in rows:
        if r["host"] == "all":
            split = {x["host"]: x for x in rows if x["host"] != "all" and (x["scenario"], x["level"]) ==
                     (r["scenario"], r["level"])}
            lines.append(row_line(r, split))
    c = sc["clean"]
    lines += ["", f"clean requests explained: {c['requests']}, false alarms {_pct(c['false_alarm'])} "
                  f"({_pct(c['false_alarm_quiet'])} of the {c['quiet_requests']} in quiet-host windows) "
                  f"(causes {c['alarm_causes'] or 'none'}), any verdict {_pct(c['any_verdict'])}; "
                  f"named in {c['clean_windows']} clean windows: {c['named_in_clean_windows'] or 'nothing'}"]
    lines += [f"skipped {s['scenario']}: {s['reason']}" for s in results["skipped"]]
    lines += [f"ERROR in {e['scenario']}: {e['error']}" for e in results.get("errors", [])]
    lines += ["", "win/eff: windows / windows where the fault slowed >= 1 request (only those are scored); slow x: "
              "median e2e / normal; top1/top3/culpr: share of slowed requests; attrib: median explained / excess; "
              "detect: share of effective windows named by any agent output, p50/p90 s after onset; FA: clean "
              f"requests with a likely top verdict; q/b: windows on a quiet / busy host (other processes using "
              f">= {BUSY_CORES} cores), top-1 of each where a row has both.",
              f"Old cause names mapped: {OLD_CAUSES}; a verdict with only a score is likely at score >= "
              f"{LIKELY_SCORE}; culprits count only by pid/interface/rank/GPU, never by comm."]
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def write_all(results: dict[str, Any], out_dir: Path, name: str = "table", plots: bool = True) -> None:
    """table.txt and one PNG per scenario (the high-intensity example request with the largest excess)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.txt").write_text(table(results))
    print(table(results), flush=True)
    if not plots:
        return
    try:
        import timeline
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed: no timeline PNGs (pip install matplotlib)", flush=True)
        return
    for scenario in dict.fromkeys(w["scenario"] for w in results["windows"]):
        wins = [w for w in results["windows"] if w["scenario"] == scenario and "example" in w]
        if wins:
            best = max(wins, key=lambda w: (w["level"] in ("high", "observe", "none"),
                                            max((r["excess_ms"] for r in w["requests"]), default=0)))
            timeline.plot(best, out_dir / f"{name}-{scenario}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("results")
    p.add_argument("--out-dir", default="")
    p.add_argument("--name", default="table")
    p.add_argument("--rescore", action="store_true", help="recompute the scores from the windows")
    p.add_argument("--no-plots", action="store_true")
    a = p.parse_args()
    results = json.loads(Path(a.results).read_text())
    if a.rescore or "scores" not in results:
        results["scores"] = score.score_all(results)
    write_all(results, Path(a.out_dir or Path(a.results).with_suffix("")), a.name, plots=not a.no_plots)


if __name__ == "__main__":
    main()
