"""Onset -> first agent output naming a cause: the control API polled through a window (evidence events,
incidents, the top verdict of each request that finishes), recording when each cause was first named."""
from __future__ import annotations

import time
from typing import Any

from agentq import AgentQuery
from shapes import cause_name, event_cause


class Detector:
    """`poll()` repeatedly from onset on; `named[cause] = {"s": seconds after onset, "via": what named it}`."""

    def __init__(self, q: AgentQuery, engine_pids: set[int], onset_ns: int) -> None:
        self.q, self.engine_pids, self.onset_ns = q, engine_pids, onset_ns
        self.named: dict[str, dict[str, Any]] = {}
        self._explained: set[str] = set()

    def _name(self, cause: str | None, via: str) -> None:
        if cause and cause not in self.named:
            self.named[cause] = {"s": round((time.monotonic_ns() - self.onset_ns) / 1e9, 3), "via": via}

    def poll(self) -> None:
        for e in self.q.events(self.onset_ns):
            if e["start_ns"] >= self.onset_ns:  # evidence that began before the fault names something else
                self._name(event_cause(e, self.engine_pids), f"event:{e['kind']}")
        for inc in self.q.incidents(self.onset_ns):
            inc = inc.get("attrs") or inc
            if max(inc.get("onset_ns") or 0, inc.get("opened_ns") or 0) >= self.onset_ns:  # not one already open
                self._name(cause_name(inc.get("cause")), "incident")
        for row in self.q.requests(limit=40):
            rid = row["request_id"]
            if row["end_ns"] < self.onset_ns or rid in self._explained:
                continue
            self._explained.add(rid)
            report = self.q.explain(rid)
            if report and report.get("verdicts"):
                self._name(cause_name(report["verdicts"][0].get("cause")), "verdict")

    def poll_until(self, deadline: float, interval_s: float = 0.25) -> None:
        """Poll until time.monotonic() reaches `deadline`."""
        while True:
            t = time.monotonic()
            if t >= deadline:
                return
            self.poll()
            time.sleep(max(0.0, min(interval_s - (time.monotonic() - t), deadline - time.monotonic())))
