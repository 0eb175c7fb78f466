"""The replay source: a recorder directory (DIR/samples, DIR/events parquet) read with pyarrow + pandas.

Recordings hold Samples and Events, not snapshots, so the Frame at the time cursor is rebuilt from them: latest
GPU values, per-interval syscall / run-queue counts summed over the window (averages only: the buckets stay in
the agent), interface rates from the bytes per poll, and requests from the engine's span events.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from gpusleuth.agent.recorder import EVENT_SCHEMA, SAMPLE_SCHEMA
from gpusleuth.tui.recording_views import (gpu_snapshot, net_snapshot, requests_from_events, series_points,
                                           window_rows)
from gpusleuth.tui.source import HISTORY_S, WINDOW_S, DataSource, Frame, SourceError, Want
from gpusleuth.tui.source_live import MAX_EVENTS, split_phases

PROBE_PREFIXES = {"gpu": ("gpu.",), "syscalls": ("syscall.",), "sched": ("runq.",), "net": ("net.",)}
EVENT_SOURCES = {"gpu": "gpu", "syscalls": "syscalls", "sched": "sched", "net": "net", "spans": "spans"}


def _read(path: Path, schema) -> pd.DataFrame:
    if not path.is_dir():
        return schema.empty_table().to_pandas()
    try:  # files starting with "." are the recorder's temp files: the dataset reader skips them
        return ds.dataset(str(path), format="parquet", schema=schema).to_table().to_pandas()
    except OSError as exc:
        raise SourceError(f"cannot read the recording under {path}: {exc}") from None


class Table:
    """One series' samples sorted by time, with parsed labels, for fast window slicing."""

    def __init__(self, df: pd.DataFrame, label_cache: dict[str, dict]) -> None:
        df = df.sort_values("t_ns", kind="stable")
        self.t = df["t_ns"].to_numpy(np.int64)
        self.value = df["value"].to_numpy(np.float64)
        self.labels = [label_cache.setdefault(s, json.loads(s) if s else {}) for s in df["labels"]]

    def window(self, lo: int, hi: int) -> range:
        """Indices with lo < t <= hi."""
        return range(int(np.searchsorted(self.t, lo, "right")), int(np.searchsorted(self.t, hi, "right")))


class RecordingSource(DataSource):
    has_cursor = True

    def __init__(self, directory: str | Path) -> None:
        root = Path(directory)
        if not (root / "samples").is_dir() and not (root / "events").is_dir():
            raise SourceError(f"{root} is not a gpusleuth recording: it has no samples/ or events/ folder "
                              "(pass the [recorder] directory of the agent's config)")
        self.label = f"recording {root}"
        samples, events = _read(root / "samples", SAMPLE_SCHEMA), _read(root / "events", EVENT_SCHEMA)
        self.notes: dict[str, str] = {}
        samples, events = self._last_boot(samples, events)
        if samples.empty and events.empty:
            raise SourceError(f"the recording under {root} is empty (no samples or events written yet)")
        cache: dict[str, dict] = {}
        self.tables = {name: Table(df, cache) for name, df in samples.groupby("series")}
        self.events = events.sort_values("start_ns", kind="stable").reset_index(drop=True)
        self._ev_start = self.events["start_ns"].to_numpy(np.int64)
        self._ev_end = self.events["end_ns"].to_numpy(np.int64)
        self._cols = {c: self.events[c].tolist() for c in ("kind", "source", "pid", "tid", "comm", "attrs")}
        self._attrs: dict[int, dict] = {}
        starts = [t.t[0] for t in self.tables.values() if len(t.t)] + list(self._ev_start[:1])
        ends = [t.t[-1] for t in self.tables.values() if len(t.t)] + ([int(self._ev_end.max())] if len(events) else [])
        self.start_ns, self.end_ns = int(min(starts)), int(max(ends))
        self.cursor_ns = self.end_ns  # open at the end: the incident is usually what was recorded last
        offsets = (samples["wall_ns"] - samples["t_ns"]) if not samples.empty else \
            (events["wall_start_ns"] - events["start_ns"])
        self.wall_offset_ns = int(offsets.median())
        self._cache: tuple[tuple, Frame] | None = None

    def _last_boot(self, samples: pd.DataFrame, events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Monotonic times of different boots do not compare: keep the newest boot's records."""
        boots = pd.concat([samples[["boot_id", "wall_ns"]],
                           events[["boot_id", "wall_start_ns"]].rename(columns={"wall_start_ns": "wall_ns"})])
        if boots["boot_id"].nunique() <= 1:
            return samples, events
        last = boots.sort_values("wall_ns")["boot_id"].iloc[-1]
        self.notes["recording"] = f"the recording spans {boots['boot_id'].nunique()} boots; showing the last"
        return samples[samples["boot_id"] == last], events[events["boot_id"] == last]

    # --- cursor ------------------------------------------------------------------------------------------------
    def seek(self, delta_s: float) -> None:
        self.cursor_ns = min(self.end_ns, max(self.start_ns, self.cursor_ns + int(delta_s * 1e9)))

    def seek_edge(self, to_end: bool) -> None:
        self.cursor_ns = self.end_ns if to_end else self.start_ns

    def cursor_info(self) -> dict[str, Any]:
        return {"cursor_ns": self.cursor_ns, "start_ns": self.start_ns, "end_ns": self.end_ns,
                "wall_offset_ns": self.wall_offset_ns}

    # --- frames ------------------------------------------------------------------------------------------------
    def event_dicts(self, lo: int, hi: int, limit: int = MAX_EVENTS) -> list[dict[str, Any]]:
        """Events overlapping [lo, hi], oldest first, as the control socket shapes them (plus "seq")."""
        idx = np.nonzero((self._ev_start <= hi) & (self._ev_end >= lo))[0][-limit:]
        out = []
        c = self._cols
        for i in map(int, idx):
            if i not in self._attrs:
                self._attrs[i] = json.loads(c["attrs"][i]) if c["attrs"][i] else {}
            out.append({"kind": c["kind"][i], "source": c["source"][i], "start_ns": int(self._ev_start[i]),
                        "end_ns": int(self._ev_end[i]), "pid": int(c["pid"][i]), "tid": int(c["tid"][i]),
                        "comm": c["comm"][i], "attrs": self._attrs[i], "seq": i + 1})
        return out

    def fetch(self, want: Want) -> Frame:
        key = (self.cursor_ns, want)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        c = self.cursor_ns
        lo = c - int(HISTORY_S * 1e9)
        frame = Frame(t_ns=c, wall_offset_ns=self.wall_offset_ns, notes=dict(self.notes))
        history = self.event_dicts(lo, c)
        gpu = gpu_snapshot(self.tables, c)
        if gpu is not None:
            frame.snapshots["gpu"] = gpu
        net = net_snapshot(self.tables, [e for e in history if e["kind"] == "net.microburst"], lo, c)
        if net is not None:
            frame.snapshots["net"] = net
        frame.series = series_points(self.tables, lo, c)
        frame.windows = {"syscalls": window_rows(self.tables, "syscall", c - int(WINDOW_S * 1e9), c),
                         "runq": window_rows(self.tables, "runq", c - int(WINDOW_S * 1e9), c)}
        frame.notes["window.buckets"] = "a recording keeps counts and sums only: averages, no percentiles"
        frame.events = [e for e in history if e["source"] != "spans"] if want.is_events else []  # as live
        frame.requests = requests_from_events(history, c)
        if not frame.requests and not any(e["source"] == "spans" for e in history):
            frame.notes["requests"] = "no engine spans in the recording near the cursor"
        frame.status = self._status()
        self._cache = (key, frame)
        return frame

    def _status(self) -> dict[str, Any]:
        probes = {}
        kinds = set(self.events["source"].unique()) if len(self.events) else set()
        for name in ("syscalls", "sched", "net", "gpu", "spans"):
            has = any(s.startswith(PROBE_PREFIXES.get(name, ("-",))) for s in self.tables) or name in kinds
            probes[name] = {"state": "recorded" if has else "absent",
                            "reason": "" if has else f"no {name} records in this recording", "path": "recording"}
        return {"probes": probes, "recording": True}

    def request_detail(self, request: dict[str, Any]) -> dict[str, Any]:
        start, end = request.get("start_ns"), request.get("end_ns")
        if start is None or end is None:
            return {"request": request, "phases": [], "overlapping": [], "verdicts": [],
                    "notes": {"phases": "the request has no time window"}}
        phases, others = split_phases(self.event_dicts(start, end), request)
        return {"request": request, "phases": phases, "overlapping": others, "verdicts": [],
                "notes": {"verdicts": "root-cause verdicts come from a live agent (`agent explain`)"}}
