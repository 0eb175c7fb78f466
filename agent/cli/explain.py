"""`agent explain`: why was this request slow. One request's latency budget (where its time went against what its
engine normally takes) and the causes that split the excess, each with evidence, culprit and runbook; or the N
slowest requests; or a window's slow requests with a tally of causes. From a running agent, or `--recording DIR`
offline from the recorder's parquet, with the same diagnosis.
"""
from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from typing import Any

from gpusleuth.agent.cli.format_explain import format_report, format_window
from gpusleuth.probes.config import ConfigError
from gpusleuth.agent.diagnosis.causes import is_likely
from gpusleuth.agent.control.client import ControlClient, ControlError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
_UNIT_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("request_id", nargs="?", help="the request to explain (its id, e.g. cmpl-...)")
    p.add_argument("--slowest", type=int, nargs="?", const=5, metavar="N",
                   help="explain the N requests with the most excess latency (default 5)")
    p.add_argument("--window", metavar="DURATION", help="slow requests that finished in the last DURATION "
                   "(e.g. 90s, 5m, 1h) and the causes they share")
    p.add_argument("--min-excess-ms", type=float, default=None, metavar="X",
                   help="with --window: only requests at least X ms slower than expected (default: the "
                   "contract's slow rule)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--recording", metavar="DIR", help="explain from a recording (the [recorder] directory) "
                   "instead of the running agent")


def parse_duration(text: str) -> float:
    """Seconds in "90s", "5m", "1h", "250ms" or a plain number of seconds; ConfigError naming --window."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ConfigError("--window", f"{text!r} is not a duration like 90s, 5m or 1h")
    return float(m[1]) * _UNIT_S[m[2]]


class _Live:
    """Answers from a running agent's control socket."""

    def __init__(self, client: ControlClient) -> None:
        self.client = client

    def explain(self, request_id: str) -> dict[str, Any] | None:
        try:
            return self.client.call("explain", request_id=request_id)
        except ControlError as exc:
            if exc.code == "not_found":
                return None
            raise

    def diagnoses(self, window_s: float | None) -> list[dict[str, Any]]:
        since = None
        if window_s is not None:
            since = int(self.client.call("status")["monotonic_ns"] - window_s * 1e9)
        return self.client.call("diagnoses", since_ns=since, limit=10 ** 6)


class _Offline:
    """Answers from a recording, diagnosed again with the agent's code."""

    def __init__(self, directory: str) -> None:
        from gpusleuth.agent.recording.replay import Replay, RecordingError  # noqa: PLC0415 - pandas is slow
        try:
            self.replay = Replay(directory)
        except RecordingError as exc:
            raise ConfigError("--recording", str(exc)) from None
        self.monitor = self.replay.monitor()

    def explain(self, request_id: str) -> dict[str, Any] | None:
        return self.monitor.explain(request_id)

    def diagnoses(self, window_s: float | None) -> list[dict[str, Any]]:
        rows = list(self.monitor.recent)
        if window_s is not None and rows:
            end = max(r["end_ns"] for r in rows)
            rows = [r for r in rows if r["end_ns"] >= end - window_s * 1e9]
        return rows


def _is_slow(row: dict[str, Any], min_excess_ms: float | None) -> bool:
    if min_excess_ms is not None:
        return row["excess_ms"] >= min_excess_ms
    return is_likely(row["excess_ms"], row["excess_ms"], row["expected_ms"])  # the contract's slow excess


def run(args: argparse.Namespace, socket_path: str) -> int:
    """The command; returns its exit code."""
    modes = sum(x is not None for x in (args.request_id, args.slowest, args.window))
    if modes != 1:
        raise ConfigError("agent explain", "give one of REQUEST_ID, --slowest [N] or --window DURATION")
    if args.min_excess_ms is not None and args.window is None:
        raise ConfigError("--min-excess-ms", "only goes with --window")
    if args.recording:
        return _answer(args, _Offline(args.recording))
    with ControlClient(socket_path) as client:
        return _answer(args, _Live(client))


def _answer(args: argparse.Namespace, src) -> int:
    if args.request_id is not None:
        report = src.explain(args.request_id)
        if report is None:
            print(f"agent explain: no finished request {args.request_id!r} is known "
                  "(`agent explain --slowest` lists some)")
            return EXIT_ERROR
        print(json.dumps(report, indent=2) if args.json else format_report(report))
        return EXIT_OK
    if args.slowest is not None:
        rows = sorted(src.diagnoses(None), key=lambda r: r["excess_ms"], reverse=True)[:max(1, args.slowest)]
        reports = [r for r in (src.explain(row["request_id"]) for row in rows) if r is not None]
        print(json.dumps(reports, indent=2) if args.json else "\n\n".join(map(format_report, reports))
              or "no diagnosed requests yet")
        return EXIT_OK
    window_s = parse_duration(args.window)
    rows = [r for r in src.diagnoses(window_s) if _is_slow(r, args.min_excess_ms)]
    tally = Counter(r["cause"] or "unexplained" for r in rows)
    if args.json:
        print(json.dumps({"window_s": window_s, "requests": rows, "causes": dict(tally.most_common())}, indent=2))
    else:
        print(format_window(rows, tally, args.window))
    return EXIT_OK
