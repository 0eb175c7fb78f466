"""The live diagnosis re-run over a recording: the Monitor fed its Events and Samples in time order, a second at a
time, so each request is diagnosed against the baseline its engine had then, as a live agent would have; with
`is_live`, also its live window each second, so the incidents a live agent would have opened are opened again."""
from __future__ import annotations

from typing import Iterable

from gpusleuth.agent.diagnosis.hostinfo import from_samples
from gpusleuth.agent.diagnosis.monitor import SERIES, Monitor, MonitorConfig
from gpusleuth.probes.records import Event, Sample

CHUNK_NS = 1_000_000_000


def replay_monitor(events: list[Event], samples: Iterable[Sample], is_live: bool = False) -> Monitor:
    """A Monitor that has seen the whole recording (kept forever: a recording does not age); `is_live`: its
    incident tracker too (one live tick per second, over the second the horizon reached)."""
    m = Monitor(MonitorConfig(history_s=10 ** 9, recent=10 ** 7))
    wanted = sorted((s for s in samples if s.series in SERIES), key=lambda s: s.t_ns)
    from_samples(m.host, wanted)
    events = sorted(events, key=lambda e: e.end_ns)
    if not events and not wanted:
        return m
    t = min([e.end_ns for e in events[:1]] + [s.t_ns for s in wanted[:1]])
    i = j = 0
    while i < len(events) or j < len(wanted):
        t += CHUNK_NS
        i2 = i
        while i2 < len(events) and events[i2].end_ns <= t:
            i2 += 1
        j2 = j
        while j2 < len(wanted) and wanted[j2].t_ns <= t:
            j2 += 1
        m.feed(events[i:i2], wanted[j:j2])
        m.advance(t - CHUNK_NS)  # evidence of the last second may still be in the next chunk
        if is_live:
            m.live(t - CHUNK_NS)
        i, j = i2, j2
    m.advance(1 << 62)
    if is_live:
        m.live(t)  # and close what was still open: nothing more was recorded
    return m
