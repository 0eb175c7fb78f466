"""`agent runbook NAME | --alert ALERTNAME | --list`: run a runbook's checks and print each figure, whether it
confirms the fault, and the next step.

Checks ask the live agent's control socket (or a recording with --recording DIR) and, with --prometheus URL, a
Prometheus server. Exit codes: 0 the checks ran; 2 unknown runbook or alert, or a runbook that does not validate
(the message names the runbook and the check); 3 no agent running (and no --recording) for a runbook that needs one.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from typing import Any, Callable

from gpusleuth.agent.control.client import AgentNotRunning, ControlClient, ControlError
from gpusleuth.exporters.alerts import catalog
from gpusleuth.runbooks.book import Runbook, RunbookError, Vocabulary, load_all
from gpusleuth.runbooks.checks import CheckResult, Prometheus, SourceUnavailable, run

EXIT_OK, EXIT_USAGE, EXIT_STATE = 0, 2, 3
EXAMPLES = """
  sudo agent runbook --list
  sudo agent runbook cpu-contention
  sudo agent runbook --alert GpusleuthIncidentProcessFrozen --prometheus http://prometheus:9090
  agent runbook gpu-error --recording /var/lib/gpusleuth --json"""


def vocabulary() -> Vocabulary:
    """What checks may name: the exported series (and the rules' recorded ones), the control methods."""
    from gpusleuth.agent.control.methods import ControlApi  # noqa: PLC0415 - pulls in the diagnosis

    methods: dict[str, frozenset[str]] = {"ping": frozenset()}

    class _Recorder:
        def register(self, name: str, fn: Callable[..., Any]) -> None:
            methods[name] = frozenset(inspect.signature(fn).parameters)

    ControlApi(None).register(_Recorder())  # type: ignore[arg-type]
    return Vocabulary(catalog.sample_names(catalog.recorded_names()), methods)


class LiveSources:
    """The running agent's control socket; Prometheus when a URL is given."""

    def __init__(self, socket_path: str, prometheus: str | None) -> None:
        self.client = ControlClient(socket_path)
        self.prom = Prometheus(prometheus) if prometheus else None

    def call(self, method: str, **params: Any) -> Any:
        try:
            return self.client.call(method, **params)
        except AgentNotRunning as exc:
            raise SourceUnavailable(str(exc)) from None
        except ControlError as exc:
            raise RuntimeError(f"agent answered {exc.code}: {exc}") from None

    def promql(self, expr: str) -> list[tuple[dict[str, str], float]]:
        if self.prom is None:
            raise SourceUnavailable("PromQL check: pass --prometheus URL to run it")
        return self.prom.query(expr)

    def now_ns(self) -> int:
        return time.monotonic_ns()  # the agent's clock: CLOCK_MONOTONIC of this host


class RecordingSources(LiveSources):
    """A recording read back: events, requests, explain, incidents and status as the agent would answer them;
    windows end where the recording ends."""

    def __init__(self, directory: str, prometheus: str | None) -> None:
        from gpusleuth.agent.recording.replay import Replay  # noqa: PLC0415 - pandas/pyarrow only when asked

        self.replay = Replay(directory)
        self.prom = Prometheus(prometheus) if prometheus else None

    def call(self, method: str, **params: Any) -> Any:
        r = self.replay
        if method == "events":
            found = r.event_dicts(params.get("start_ns") or r.start_ns, params.get("end_ns") or r.end_ns,
                                  int(params.get("limit", 1000)))
            return [e for e in found if not params.get("kinds") or e["kind"] in params["kinds"]]
        if method == "status":
            return r.status()
        if method == "incidents":
            return r.monitor().tracker.incidents(params.get("since_ns"), params.get("is_open"))
        if method == "diagnoses":
            rows = [d for d in r.monitor().recent if d["end_ns"] >= (params.get("since_ns") or 0)]
            return sorted(rows, key=lambda d: d["excess_ms"], reverse=True)[:int(params.get("slowest") or 10**9)]
        if method == "explain":
            return r.explain({"request_id": params["request_id"]})
        raise SourceUnavailable(f"control method {method!r} has no answer in a recording")

    def now_ns(self) -> int:
        return self.replay.end_ns


def add_subcommand(add: Callable[[str, str], argparse.ArgumentParser], commands: dict[str, Callable]) -> None:
    """Register `agent runbook` on the main parser (`add` makes a subparser) and in its command table."""
    p = add("runbook", "run a runbook's checks: figures, pass/fail, next steps")
    p.epilog = "examples:" + EXAMPLES
    p.add_argument("name", nargs="?", help="runbook name (file stem in runbooks/, e.g. cpu-contention)")
    p.add_argument("--alert", metavar="ALERTNAME", help="the runbook of this alert")
    p.add_argument("--list", action="store_true", help="list the runbooks, their alerts and causes")
    p.add_argument("--prometheus", metavar="URL", help="Prometheus server for the PromQL checks")
    p.add_argument("--recording", metavar="DIR", help="answer control checks from a recording, not the agent")
    p.add_argument("--socket", help="control socket (default: from the config)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    commands["runbook"] = main


def _pick(books: list[Runbook], args: argparse.Namespace) -> Runbook:
    if args.alert:
        found = [b for b in books if args.alert in b.alerts]
        if not found:
            raise LookupError(f"no runbook answers alert {args.alert!r}; `agent runbook --list` shows the alerts")
        return found[0]
    found = [b for b in books if b.id == args.name]
    if not found:
        raise LookupError(f"no runbook {args.name!r}; known: {', '.join(b.id for b in books)}")
    return found[0]


def _listing(books: list[Runbook], is_json: bool) -> str:
    rows = [{"id": b.id, "title": b.title, "alerts": b.alerts, "causes": b.causes, "checks": len(b.checks)}
            for b in books]
    if is_json:
        return json.dumps(rows, indent=2)
    return "\n".join(f"{r['id']:<22} {r['title']}\n{'':<22} alerts: {', '.join(r['alerts']) or '-'}; causes: "
                     f"{', '.join(r['causes']) or '-'}; {r['checks']} checks" for r in rows)


def _figure(r: CheckResult) -> str:
    if r.figure is None:
        return "none"
    return f"{r.figure:.4g}" + (f" {r.check.unit}" if r.check.unit else "")


def report(book: Runbook, results: list[CheckResult]) -> str:
    """The text `agent runbook` prints."""
    lines = [f"runbook {book.id}: {book.title} ({book.path})"]
    for r in results:
        c = r.check
        if r.status == "skip":
            lines.append(f"  SKIP  {c.name}  [{r.detail}]")
            continue
        lines.append(f"  {r.status.upper():<5} {c.name}: {_figure(r)} (fault if {c.fault_op} {c.fault_value:g})"
                     + (f"  [{r.detail}]" if r.detail else ""))
        if r.step:
            lines.append(f"        next: {r.step}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Run `agent runbook` with parsed `args`."""
    try:
        books = load_all(vocabulary())
    except RunbookError as exc:
        print(f"agent runbook: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.list:
        print(_listing(books, args.json))
        return EXIT_OK
    if not args.name and not args.alert:
        print("agent runbook: name a runbook, or pass --alert ALERTNAME or --list", file=sys.stderr)
        return EXIT_USAGE
    try:
        book = _pick(books, args)
    except LookupError as exc:
        print(f"agent runbook: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    if args.recording:
        sources: LiveSources = RecordingSources(args.recording, args.prometheus)
    else:
        from gpusleuth.agent.control.client import socket_path  # noqa: PLC0415

        sources = LiveSources(args.socket or socket_path(getattr(args, "config", None)), args.prometheus)
    results = run(book, sources)
    if args.json:
        print(json.dumps({"runbook": book.id, "title": book.title, "path": str(book.path),
                          "checks": [r.to_dict() for r in results]}, indent=2))
    else:
        print(report(book, results))
    needs_agent = [r for r in results if r.check.source != "promql"]
    if needs_agent and all(r.status == "skip" for r in needs_agent) and not args.recording:
        print(f"agent runbook: {needs_agent[0].detail}", file=sys.stderr)
        return EXIT_STATE
    return EXIT_OK
