"""A recorder directory (DIR/samples, DIR/events parquet) read back with pyarrow + pandas, queried at a time cursor.

Recordings hold Samples and Events, not snapshots, so the state at an instant is rebuilt from them (views.py):
latest GPU values, per-interval syscall / run-queue counts summed over a window (averages only: the buckets stay
in the agent), interface rates from the bytes per poll, and requests from the engine's span events. `explain` runs
the same diagnosis a live agent runs (agent/recording/diagnosis.py replays the recording through it once).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from gpusleuth.agent.diagnosis.incidents import CLOSE_AFTER_NS
from gpusleuth.agent.diagnosis.monitor import SERIES, Monitor
from gpusleuth.agent.recorder import EVENT_SCHEMA, SAMPLE_SCHEMA
from gpusleuth.agent.recording.diagnosis import replay_monitor
from gpusleuth.agent.recording.requests import RequestTable
from gpusleuth.agent.recording.views import gpu_snapshot, net_snapshot, series_points, window_rows
from gpusleuth.probes.records import Event, Sample

PROBE_PREFIXES = {"gpu": ("gpu.",), "syscalls": ("syscall.",), "sched": ("runq.",), "net": ("net.",)}
PROBES = ("syscalls", "sched", "net", "gpu", "spans")


class RecordingError(Exception):
    """The directory is not a readable recording; the message says what to pass instead."""


def _read(path: Path, schema) -> pd.DataFrame:
    if not path.is_dir():
        return schema.empty_table().to_pandas()
    try:  # files starting with "." are the recorder's temp files: the dataset reader skips them
        return ds.dataset(str(path), format="parquet", schema=schema).to_table().to_pandas()
    except OSError as exc:
        raise RecordingError(f"cannot read the recording under {path}: {exc}") from None


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


class Replay:
    """One boot's records of a recording; every query takes the instant (or interval) it is about."""

    def __init__(self, directory: str | Path) -> None:
        root = Path(directory)
        if not (root / "samples").is_dir() and not (root / "events").is_dir():
            raise RecordingError(f"{root} is not a gpusleuth recording: it has no samples/ or events/ folder "
                                 "(pass the [recorder] directory of the agent's config)")
        self.label = f"recording {root}"
        samples, events = _read(root / "samples", SAMPLE_SCHEMA), _read(root / "events", EVENT_SCHEMA)
        self.notes: dict[str, str] = {}
        samples, events = self._last_boot(samples, events)
        if samples.empty and events.empty:
            raise RecordingError(f"the recording under {root} is empty (no samples or events written yet)")
        cache: dict[str, dict] = {}
        self.tables = {name: Table(df, cache) for name, df in samples.groupby("series")}
        self.events = events.sort_values("start_ns", kind="stable").reset_index(drop=True)
        self._ev_start = self.events["start_ns"].to_numpy(np.int64)
        self._ev_end = self.events["end_ns"].to_numpy(np.int64)
        self._is_span = (self.events["source"] == "spans").to_numpy(bool)
        self._cols = {c: self.events[c].tolist() for c in ("kind", "source", "pid", "tid", "comm", "attrs")}
        self._attrs: dict[int, dict] = {}
        self._monitor: Monitor | None = None
        self._monitor_lock = threading.Lock()  # the TUI asks from two worker threads (frames, request details)
        self._requests: RequestTable | None = None
        starts = [t.t[0] for t in self.tables.values() if len(t.t)] + list(self._ev_start[:1])
        ends = [t.t[-1] for t in self.tables.values() if len(t.t)] + ([int(self._ev_end.max())] if len(events) else [])
        self.start_ns, self.end_ns = int(min(starts)), int(max(ends))
        offsets = (samples["wall_ns"] - samples["t_ns"]) if not samples.empty else \
            (events["wall_start_ns"] - events["start_ns"])
        self.wall_offset_ns = int(offsets.median())

    def _last_boot(self, samples: pd.DataFrame, events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Monotonic times of different boots do not compare: keep the newest boot's records."""
        boots = pd.concat([samples[["boot_id", "wall_ns"]],
                           events[["boot_id", "wall_start_ns"]].rename(columns={"wall_start_ns": "wall_ns"})])
        if boots["boot_id"].nunique() <= 1:
            return samples, events
        last = boots.sort_values("wall_ns")["boot_id"].iloc[-1]
        self.notes["recording"] = f"the recording spans {boots['boot_id'].nunique()} boots; showing the last"
        return samples[samples["boot_id"] == last], events[events["boot_id"] == last]

    def event_dicts(self, lo: int, hi: int, limit: int, is_spans: bool = True) -> list[dict[str, Any]]:
        """Events overlapping [lo, hi], oldest first, as the control socket shapes them (plus "seq"); the newest
        `limit`, engine spans left out unless `is_spans`."""
        mask = (self._ev_start <= hi) & (self._ev_end >= lo)
        if not is_spans:
            mask &= ~self._is_span
        idx = np.nonzero(mask)[0][-limit:]
        return [self._event(i) for i in map(int, idx)]

    def _event(self, i: int) -> dict[str, Any]:
        c = self._cols
        if i not in self._attrs:
            self._attrs[i] = json.loads(c["attrs"][i]) if c["attrs"][i] else {}
        return {"kind": c["kind"][i], "source": c["source"][i], "start_ns": int(self._ev_start[i]),
                "end_ns": int(self._ev_end[i]), "pid": int(c["pid"][i]), "tid": int(c["tid"][i]),
                "comm": c["comm"][i], "attrs": self._attrs[i], "seq": i + 1}

    def snapshots(self, lo: int, c: int, bursts: list[dict[str, Any]]) -> dict[str, Any]:
        """The GPU and network snapshots at `c` (network totals over (lo, c]) rebuilt from the recorded series."""
        out: dict[str, Any] = {}
        gpu = gpu_snapshot(self.tables, c)
        if gpu is not None:
            out["gpu"] = gpu
        net = net_snapshot(self.tables, bursts, lo, c)
        if net is not None:
            out["net"] = net
        return out

    def series(self, lo: int, hi: int) -> dict[str, list[tuple[int, float]]]:
        return series_points(self.tables, lo, hi)

    def windows(self, lo: int, hi: int) -> dict[str, list[dict[str, Any]]]:
        return {"syscalls": window_rows(self.tables, "syscall", lo, hi), "runq": window_rows(self.tables, "runq", lo, hi)}

    def request_table(self) -> RequestTable:
        """Every recorded request (built on first use from all of the recording's `request.*` events)."""
        if self._requests is None:
            idx = np.nonzero(self.events["kind"].str.startswith("request.").to_numpy(bool))[0]
            self._requests = RequestTable([self._event(int(i)) for i in idx])
        return self._requests

    def requests(self, lo: int, c: int, limit: int = 5000) -> list[dict[str, Any]]:
        """The requests finished in (lo, c] (newest `limit`) and those running at `c`, newest last."""
        return self.request_table().at(lo, c, limit)

    def incidents(self, c: int, lo: int) -> list[dict[str, Any]]:
        """Incidents the diagnosis (re-run over the whole recording) had opened by `c` and that lasted past `lo`,
        oldest first, each as it stood at `c` (`is_open`: still seen within the close delay)."""
        out = []
        for i in self.monitor().tracker.incidents(lo):
            if i["onset_ns"] <= c:
                out.append({**i, "is_open": i["last_ns"] >= c - CLOSE_AFTER_NS and (i["is_open"] or i["last_ns"] >= c)})
        return out

    def status(self) -> dict[str, Any]:
        probes = {}
        kinds = set(self.events["source"].unique()) if len(self.events) else set()
        for name in PROBES:
            has = any(s.startswith(PROBE_PREFIXES.get(name, ("-",))) for s in self.tables) or name in kinds
            probes[name] = {"state": "recorded" if has else "absent",
                            "reason": "" if has else f"no {name} records in this recording", "path": "recording"}
        return {"probes": probes, "recording": True}

    def monitor(self) -> Monitor:
        """The diagnosis re-run over the whole recording (built on first use)."""
        with self._monitor_lock:
            if self._monitor is None:
                events = [Event.from_dict(e)
                          for e in self.event_dicts(self.start_ns, self.end_ns, len(self.events) + 1)]
                samples = [Sample(name, int(t.t[i]), float(t.value[i]), t.labels[i])
                           for name, t in self.tables.items() if name in SERIES for i in range(len(t.t))]
                self._monitor = replay_monitor(events, samples, is_live=True)
            return self._monitor

    @property
    def is_diagnosed(self) -> bool:
        """Whether monitor() is built (it replays the whole recording once)."""
        return self._monitor is not None

    def explain(self, request: dict[str, Any], limit: int = 0) -> dict[str, Any]:
        """The agent's `explain` for a request, from the recording (`limit` is kept for older callers)."""
        out = self.monitor().explain(str(request.get("request_id")), request.get("pid"), row=request)
        if out is None:
            return {"request": request, "phases": [], "overlapping": [], "verdicts": [],
                    "notes": {"verdicts": "the recording has no finished spans of this request"}}
        return out
