"""The recording's request table: every request the engine's spans recorded, rebuilt once from all `request.*`
events, then answered at any cursor in O(log n). (Rebuilding from the events near the cursor undercounts: a busy
engine's spans are most of a window's events, so any cap on events read caps the requests too.)"""
from __future__ import annotations

from typing import Any

import numpy as np

from gpusleuth.agent.recording.views import requests_from_events

RUNNING_BLANK = {"end_ns": None, "ttft_s": None, "tpot_s": None, "e2e_s": None, "output_tokens": None,
                 "status": "running"}


class RequestTable:
    """Finished requests sorted by end, and every request's start, for `at(lo, c)`."""

    def __init__(self, span_events: list[dict[str, Any]]) -> None:
        rows = requests_from_events(span_events, 1 << 62)
        self.finished = sorted((r for r in rows if r["end_ns"] is not None), key=lambda r: r["end_ns"])
        self._ends = np.array([r["end_ns"] for r in self.finished], dtype=np.int64)
        self._starts = np.array([r["start_ns"] for r in self.finished], dtype=np.int64)
        self.unfinished = [r for r in rows if r["end_ns"] is None]  # the recording stopped while they ran

    def __len__(self) -> int:
        return len(self.finished)

    def count(self, lo: int, hi: int) -> int:
        """Requests that finished in (lo, hi]."""
        return int(np.searchsorted(self._ends, hi, "right") - np.searchsorted(self._ends, lo, "right"))

    def at(self, lo: int, c: int, limit: int) -> list[dict[str, Any]]:
        """As the agent would have listed them at `c`: those finished in (lo, c] (the newest `limit`), then the
        ones running at `c`, newest last."""
        i, j = int(np.searchsorted(self._ends, lo, "right")), int(np.searchsorted(self._ends, c, "right"))
        done = self.finished[max(i, j - limit):j]
        running = [{**self.finished[k], **RUNNING_BLANK}
                   for k in np.nonzero((self._starts <= c) & (self._ends > c))[0]]
        running += [r for r in self.unfinished if r["start_ns"] <= c]
        return done + sorted(running, key=lambda r: r["start_ns"])
