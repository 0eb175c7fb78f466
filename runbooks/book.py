"""A runbook's front matter as data: which causes and alerts it answers, and the checks `agent runbook` runs.

```yaml
id: cpu-contention                  # the file's stem
title: The engine's step thread waits for a CPU
causes: [cpu_contention]            # diagnosis causes (contract §3) it answers
alerts: [GpusleuthIncidentCpuContention]
checks:
  - name: engine threads waiting runnable
    promql: max by (pid, tid, comm) (rate(gpusleuth_thread_runqueue_seconds_total[1m]))   # or
    control: events                 # a control-socket method, with `params:` and `window: 5m`, or
    explain: slowest                # the verdicts of the slowest diagnosed request in `window`
    items: probes                   # (control) the list or mapping inside the answer to look at
    where: {attrs.cause: cpu_contention}   # keep items whose field equals (or is one of) the value
    figure: max attrs.ns            # count | max F | min F | sum F | last F | age F (default: count; promql: max)
    scale: 1e-6                     # figure x scale, shown in `unit`
    unit: ms
    fault_if: "> 5"                 # the figure confirms the fault when ...
    next: what to do when it does
```
Event items get `duration_ns` (end - start); `age F` is the time since the newest monotonic-ns field F (scale it
to seconds with 1e-9). Every check is validated on load against a Vocabulary (the metric names the agent and
engine export, the control methods and their parameters): an unknown name is a RunbookError naming the runbook
and the check.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from gpusleuth.runbooks.promql import metric_names

HERE = Path(__file__).resolve().parent
SOURCES = ("promql", "control", "explain")
FIGURES = ("count", "max", "min", "sum", "last", "age")
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}
# control methods whose answer can be limited to a window, and the parameter that takes its start
WINDOW_PARAM = {"events": "start_ns", "samples": "start_ns", "diagnoses": "since_ns", "incidents": "since_ns"}
CHECK_KEYS = {"name", *SOURCES, "params", "items", "where", "figure", "scale", "unit", "fault_if", "next", "ok",
              "window"}
TOP_KEYS = {"id", "title", "causes", "alerts", "checks"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class RunbookError(ValueError):
    """A runbook that cannot run; the message names the runbook file and the check."""


@dataclass(slots=True, frozen=True)
class Vocabulary:
    """What checks may name: series a query may select, control methods -> their parameter names."""

    metrics: frozenset[str]
    methods: dict[str, frozenset[str]]


@dataclass(slots=True)
class Check:
    name: str
    source: str  # promql | control | explain
    query: str  # the PromQL expression, the control method, or what to explain ("slowest")
    next: str
    fault_op: str
    fault_value: float
    params: dict[str, Any] = field(default_factory=dict)
    window_s: float | None = None
    items: str = ""
    where: dict[str, Any] = field(default_factory=dict)
    figure_op: str = "count"
    figure_field: str = ""
    scale: float = 1.0
    unit: str = ""
    ok: str = ""

    def is_fault(self, figure: float) -> bool:
        """Whether `figure` (already scaled) confirms the fault."""
        return OPS[self.fault_op](figure, self.fault_value)


@dataclass(slots=True)
class Runbook:
    id: str
    title: str
    path: Path
    causes: list[str]
    alerts: list[str]
    checks: list[Check]
    body: str


def seconds(text: str) -> float:
    """"5m" -> 300.0; ValueError on anything else."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h")
    return float(m.group(1)) * _SECONDS[m.group(2)]


def split(text: str) -> tuple[dict[str, Any], str]:
    """(front matter, markdown body) of a runbook file's text."""
    if not text.startswith("---\n"):
        raise ValueError("no front matter (the file must start with a '---' line)")
    head, sep, body = text[4:].partition("\n---\n")
    if not sep:
        raise ValueError("front matter is not closed by a '---' line")
    meta = yaml.safe_load(head)
    if not isinstance(meta, dict):
        raise ValueError("front matter is not a mapping")
    return meta, body


def parse(path: Path, vocab: Vocabulary) -> Runbook:
    """The runbook at `path`, every check validated against `vocab`."""
    try:
        meta, body = split(path.read_text())
    except (ValueError, yaml.YAMLError) as exc:
        raise RunbookError(f"runbook {path.name}: {exc}") from None
    where = f"runbook {path.name}"
    unknown = set(meta) - TOP_KEYS
    if unknown:
        raise RunbookError(f"{where}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(TOP_KEYS))}")
    if meta.get("id") != path.stem:
        raise RunbookError(f"{where}: id {meta.get('id')!r} must be the file's stem {path.stem!r}")
    checks = meta.get("checks") or []
    if not isinstance(checks, list) or not checks:
        raise RunbookError(f"{where}: needs a non-empty list of checks")
    return Runbook(path.stem, str(meta.get("title") or path.stem), path, list(meta.get("causes") or []),
                   list(meta.get("alerts") or []), [_check(where, i, c, vocab) for i, c in enumerate(checks)], body)


def _check(where: str, index: int, raw: Any, vocab: Vocabulary) -> Check:
    if not isinstance(raw, dict):
        raise RunbookError(f"{where}: check {index + 1} is not a mapping")
    label = f"{where}, check {raw.get('name') or index + 1!r}"
    try:
        return _build(raw, vocab)
    except (KeyError, ValueError, TypeError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        raise RunbookError(f"{label}: {msg}") from None


def _build(raw: dict[str, Any], vocab: Vocabulary) -> Check:
    unknown = set(raw) - CHECK_KEYS
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(CHECK_KEYS))}")
    sources = [s for s in SOURCES if s in raw]
    if len(sources) != 1:
        raise ValueError(f"needs exactly one of {', '.join(SOURCES)}")
    source, query = sources[0], str(raw[sources[0]])
    for key in ("name", "next", "fault_if"):
        if not raw.get(key):
            raise ValueError(f"needs {key!r}")
    op, _, value = str(raw["fault_if"]).strip().partition(" ")
    if op not in OPS:
        raise ValueError(f"fault_if {raw['fault_if']!r}: start with one of {' '.join(OPS)} then a number")
    figure = str(raw.get("figure") or ("max" if source == "promql" else "count")).split()
    if figure[0] not in FIGURES or len(figure) != (1 if figure[0] == "count" or source == "promql" else 2):
        raise ValueError(f"figure {raw.get('figure')!r}: count, or one of max/min/sum/last/age and a field "
                         "(PromQL checks: just max/min/sum/count/last of the result)")
    if figure[0] == "age" and source == "promql":
        raise ValueError("figure 'age' (ns since the newest FIELD) applies to control checks only")
    check = Check(str(raw["name"]), source, query, str(raw["next"]), op, float(value),
                  params=dict(raw.get("params") or {}), items=str(raw.get("items") or ""),
                  where=dict(raw.get("where") or {}), figure_op=figure[0],
                  figure_field=figure[1] if len(figure) > 1 else "", scale=float(raw.get("scale", 1.0)),
                  unit=str(raw.get("unit") or ""), ok=str(raw.get("ok") or ""),
                  window_s=seconds(raw["window"]) if "window" in raw else None)
    _validate_source(check, vocab)
    return check


def _validate_source(check: Check, vocab: Vocabulary) -> None:
    if check.source == "promql":
        try:
            names = metric_names(check.query)
        except ValueError as exc:
            raise ValueError(f"PromQL does not parse: {exc}") from None
        missing = sorted(names - vocab.metrics)
        if missing:
            raise ValueError(f"unknown metric {missing[0]!r} (not exported by the agent or the engine)")
        return
    if check.source == "explain":
        if check.query != "slowest":
            raise ValueError(f"explain {check.query!r}: only 'slowest' (the slowest diagnosed request) is known")
        method, params = "diagnoses", set(check.params)
    else:
        method, params = check.query, set(check.params)
    if method not in vocab.methods:
        raise ValueError(f"unknown control method {method!r}; known: {', '.join(sorted(vocab.methods))}")
    bad = sorted(params - vocab.methods[method])
    if bad:
        raise ValueError(f"control method {method!r} takes no parameter {bad[0]!r}")
    if check.window_s is not None and method not in WINDOW_PARAM:
        raise ValueError(f"window: control method {method!r} takes no time window")


def runbook_files() -> list[Path]:
    """Every runbook file installed with the package."""
    return sorted(HERE.glob("*.md"))


def load_all(vocab: Vocabulary) -> list[Runbook]:
    """Every runbook, validated (the first invalid one raises)."""
    return [parse(p, vocab) for p in runbook_files()]
