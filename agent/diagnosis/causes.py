"""The causes a diagnosis can name (diagnosis contract §3), their runbooks, culprits and the "likely" rule.

The same names are used in verdicts, incidents, alerts and runbooks: the runbook of a cause is
`runbooks/<cause with "_" -> "-">.md`.
"""
from __future__ import annotations

from typing import Any, TypedDict

from gpusleuth import runbooks

CAUSES = ("cpu_contention", "process_frozen", "cgroup_throttling", "softirq", "blocking_io", "memory_reclaim",
          "engine_stall", "gc_pause", "gil_contention", "queueing", "batch_interference", "gpu_contention",
          "gpu_clocks", "gpu_error", "network", "tp_straggler")

LIKELY_SHARE = 0.5  # a verdict is likely when it explains at least this share of the excess ...
LIKELY_MIN_EXCESS_FRACTION = 0.2  # ... of an excess at least this fraction of the expected time
LIKELY_MIN_EXCESS_MS = 5.0  # ... and at least this many milliseconds


class Culprit(TypedDict, total=False):
    """Who or what a verdict blames; keys that do not apply are left out."""

    pid: int
    tid: int
    comm: str
    cgroup: str
    gpu: int
    gpu_uuid: str
    rank: int
    interface: str
    request_ids: list[str]
    share: float  # e.g. a foreign process's share of the GPU's SM time
    syscall: str
    cpu: int
    vector: str  # softirq vector (NET_RX, TIMER, ...)
    reasons: list[str]  # GPU clock-event reasons


def runbook_name(cause: str) -> str:
    """`cpu_contention` -> `cpu-contention` (the runbook file's stem)."""
    assert cause in CAUSES, f"unknown cause {cause!r}"
    return cause.replace("_", "-")


def runbook_path(cause: str) -> str:
    """The installed runbook file of `cause`."""
    return str(runbooks.path(runbook_name(cause)))


def is_likely(explained_ms: float, excess_ms: float, expected_ms: float) -> bool:
    """The contract's "likely": explains >= 50 % of an excess that is >= max(20 % of expected, 5 ms)."""
    floor = max(LIKELY_MIN_EXCESS_FRACTION * expected_ms, LIKELY_MIN_EXCESS_MS)
    return excess_ms >= floor and explained_ms >= LIKELY_SHARE * excess_ms


def who(pid: int | None, comm: str | None, tid: int | None = None, **more: Any) -> Culprit:
    """A culprit naming a task by pid (and tid) and comm; None values are left out."""
    out: dict[str, Any] = {"pid": int(pid or 0), "comm": comm or "?"}
    if tid:
        out["tid"] = int(tid)
    out.update({k: v for k, v in more.items() if v is not None})
    return out  # type: ignore[return-value]


def name_of(c: Culprit) -> str:
    """"gs-step (pid 12, tid 14)" for evidence text."""
    ids = f"pid {c.get('pid', 0)}" + (f", tid {c['tid']}" if c.get("tid") and c.get("tid") != c.get("pid") else "")
    return f"{c.get('comm', '?')} ({ids})"
