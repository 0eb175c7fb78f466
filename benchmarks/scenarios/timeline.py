"""One request's timeline as a PNG: its phases, the fault window, the evidence the agent held on its path, and the
verdict it gave; so a reader sees what the agent saw. matplotlib (the `test` extra); the CI test never needs it."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

PHASE_COLOURS = {"received": "#bbbbbb", "queued": "#f0c05a", "prefill": "#5a9bd5", "decode": "#70ad47",
                 "stream": "#a5a5a5"}


def _rows(report: dict[str, Any]) -> dict[str, list[tuple[int, int]]]:
    """Evidence events by kind (and comm, so a hog and the engine get rows of their own)."""
    rows: dict[str, list[tuple[int, int]]] = {}
    for e in report.get("overlapping") or []:
        label = f"{e['kind']} {e.get('comm') or ''}".strip()[:28]
        rows.setdefault(label, []).append((e["start_ns"], max(e["end_ns"], e["start_ns"] + 200_000)))
    return dict(sorted(rows.items())[:12])


def plot(win: dict[str, Any], path: Path) -> None:
    """Draw the example request of window `win` to `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = win["example"]["report"]
    phases = [p for p in report.get("phases") or [] if p.get("start_ns") is not None]
    t0 = min((p["start_ns"] for p in phases), default=win["onset_ns"])
    dur = max((p["end_ns"] - t0 for p in phases), default=int(1e9)) / 1e6
    ms = lambda ns: (ns - t0) / 1e6  # noqa: E731
    rows = _rows(report)
    fig, ax = plt.subplots(figsize=(11, 2.4 + 0.32 * (len(rows) + 1)))
    ax.axvspan(max(ms(win["onset_ns"]), -dur), min(ms(win["end_ns"]), 2 * dur), color="#f4b6b6", alpha=0.5,
               label=f"fault window ({win['scenario']} {win['level']})")
    for p in phases:
        ax.barh(0, ms(p["end_ns"]) - ms(p["start_ns"]), left=ms(p["start_ns"]), height=0.6,
                color=PHASE_COLOURS.get(p["phase"], "#888888"), edgecolor="black", linewidth=0.3,
                label=f"phase {p['phase']}")
    for i, (label, spans) in enumerate(rows.items(), start=1):
        ax.broken_barh([(ms(a), (b - a) / 1e6) for a, b in spans], (i - 0.3, 0.6), color="#7f5fbf")
    ax.set_yticks(range(len(rows) + 1), ["request " + win["example"]["id"][-8:], *rows])
    ax.invert_yaxis()
    ax.set_xlabel("ms since the request's first phase began (evidence rows: what the agent held on its path)")
    ax.set_xlim(-0.1 * dur, 1.1 * dur)
    verdicts = report.get("verdicts") or []
    said = "; ".join(f"{v.get('cause')} ({v.get('score', v.get('explained_ms'))})" for v in verdicts[:3]) or "none"
    evidence = textwrap.shorten(str(verdicts[0].get("evidence", "")), 180) if verdicts else ""
    ax.set_title(f"{win['scenario']} ({win['level']}), truth {win['cause']}: agent said {said}\n{evidence}",
                 fontsize=8, loc="left")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
