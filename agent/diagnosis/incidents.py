"""Incidents: a cause the live diagnosis keeps pointing at for an engine, opened when first seen, updated while it
lasts and closed once it has not been seen for a while (diagnosis contract §3). Each change is an Event of kind
`incident` (source "diagnosis"), so the recorder keeps the history; the open ones are in the `diagnosis` snapshot.
"""
from __future__ import annotations

import itertools
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from gpusleuth.agent.diagnosis.causes import Culprit, runbook_path
from gpusleuth.agent.diagnosis.live import Candidate
from gpusleuth.probes.records import Event

CLOSE_AFTER_NS = 2_000_000_000  # not seen for this long: over
UPDATE_EVERY_NS = 2_000_000_000  # an open incident is re-emitted (as an Event) at most this often
KEEP_CLOSED = 1000


@dataclass(slots=True)
class Incident:
    id: str
    cause: str
    engine_pid: int
    engine_comm: str
    culprit: Culprit
    onset_ns: int
    last_ns: int
    opened_ns: int
    evidence: str
    is_open: bool = True
    explained_ms: float = 0.0  # in the latest window
    ticks: int = 1
    emitted_ns: int = 0
    culprits: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "cause": self.cause, "culprit": dict(self.culprit), "onset_ns": self.onset_ns,
                "last_ns": self.last_ns, "opened_ns": self.opened_ns, "evidence": self.evidence,
                "runbook": runbook_path(self.cause), "is_open": self.is_open, "engine_pid": self.engine_pid,
                "engine_comm": self.engine_comm, "explained_ms": round(self.explained_ms, 3)}

    def event(self) -> Event:
        return Event("incident", "diagnosis", self.onset_ns, self.last_ns, pid=self.engine_pid,
                     comm=self.engine_comm, attrs=self.to_dict())


class IncidentTracker:
    """Open incidents by (engine, cause), recently closed ones, and counts per cause."""

    def __init__(self) -> None:
        self.open: dict[tuple[int, str], Incident] = {}
        self.closed: deque[Incident] = deque(maxlen=KEEP_CLOSED)
        self.opened_total: Counter = Counter()
        self._ids = itertools.count(1)

    def update(self, found: list[Candidate], comms: dict[int, str], now_ns: int) -> list[Event]:
        """Fold one tick's candidates in; returns the incident Events to store (opened, updated, closed)."""
        out = []
        for c in found:
            key = (c.engine_pid, c.verdict.cause)
            inc = self.open.get(key)
            if inc is None:
                inc = self.open[key] = self._open(c, comms.get(c.engine_pid, ""), now_ns)
                out.append(inc.event())
                continue
            self._refresh(inc, c, now_ns)
            if now_ns - inc.emitted_ns >= UPDATE_EVERY_NS:
                inc.emitted_ns = now_ns
                out.append(inc.event())
        for key, inc in list(self.open.items()):
            if now_ns - inc.last_ns >= CLOSE_AFTER_NS and not any(
                    (c.engine_pid, c.verdict.cause) == key for c in found):
                inc.is_open = False
                del self.open[key]
                self.closed.append(inc)
                out.append(inc.event())
        return out

    def _open(self, c: Candidate, comm: str, now_ns: int) -> Incident:
        v = c.verdict
        self.opened_total[v.cause] += 1
        inc = Incident(f"inc-{c.engine_pid}-{next(self._ids)}", v.cause, c.engine_pid, comm, v.culprit, c.onset_ns,
                       c.window[1], now_ns, v.evidence, explained_ms=v.explained_ns / 1e6, emitted_ns=now_ns)
        inc.culprits[_key(v.culprit)] += 1
        return inc

    def _refresh(self, inc: Incident, c: Candidate, now_ns: int) -> None:
        v = c.verdict
        inc.last_ns = max(inc.last_ns, c.window[1])
        inc.ticks += 1
        inc.explained_ms = v.explained_ns / 1e6
        inc.evidence = v.evidence
        inc.culprits[_key(v.culprit)] += 1
        if _key(v.culprit) == inc.culprits.most_common(1)[0][0]:
            inc.culprit = v.culprit  # the culprit seen most often stands

    def incidents(self, since_ns: int | None = None, is_open: bool | None = None) -> list[dict[str, Any]]:
        every = list(self.closed) + list(self.open.values())
        return [i.to_dict() for i in sorted(every, key=lambda i: i.onset_ns)
                if (since_ns is None or i.last_ns >= since_ns) and (is_open is None or i.is_open == is_open)]


def _key(c: Culprit) -> tuple:
    return c.get("pid"), c.get("comm"), c.get("cgroup"), c.get("gpu")
