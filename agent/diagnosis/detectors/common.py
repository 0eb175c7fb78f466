"""Helpers the detectors share: evidence on the path of each part, culprit tallies, figures in text."""
from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

from gpusleuth.agent.diagnosis.context import Context, cover
from gpusleuth.agent.diagnosis.intervals import Interval
from gpusleuth.probes.records import Event


def ms(ns: float) -> str:
    """12.3 ms / 1.23 s."""
    return f"{ns / 1e9:.2f} s" if ns >= 10e9 else f"{ns / 1e6:.1f} ms"


def path_events(ctx: Context, kind: str, keep: Callable[[Event], bool] = lambda e: True,
                is_server_too: bool = True) -> tuple[list[Event], list[Event]]:
    """Events of `kind` on the step thread (for the engine parts) and on the other engine threads (for arrival
    and stream), filtered by `keep`."""
    eng = [e for e in ctx.on_step_thread(kind) if keep(e)]
    srv = [e for e in ctx.off_step_thread(kind) if keep(e)] if is_server_too and ctx.server_parts() else []
    return eng, srv


def claims(ctx: Context, eng: list[Interval], srv: list[Interval]) -> dict[str, list[Interval]]:
    """Intervals on the step thread claim the engine parts; on the server threads, arrival and stream."""
    out = cover(ctx, eng, ctx.engine_parts())
    out.update(cover(ctx, srv, ctx.server_parts(), busy_only=False))
    return out


def spans(events: Iterable[Event]) -> list[Interval]:
    return [(e.start_ns, e.end_ns) for e in events]


class Tally:
    """CPU (or other) time per culprit task, keyed by pid, remembering a tid and comm for each."""

    def __init__(self) -> None:
        self.ns: Counter = Counter()
        self.names: dict[int, tuple[int, str]] = {}

    def add(self, pid: int, tid: int, comm: str, ns: float) -> None:
        if pid <= 0 or ns <= 0:  # pid 0 is the idle task: never a culprit
            return
        self.ns[pid] += ns
        self.names.setdefault(pid, (tid, comm))

    def top(self, n: int = 3) -> list[tuple[int, int, str, float]]:
        return [(pid, *self.names[pid], ns) for pid, ns in self.ns.most_common(n)]

    def text(self, n: int = 3) -> str:
        return ", ".join(f"{comm} (pid {pid}) {ms(ns)}" for pid, _, comm, ns in self.top(n))
