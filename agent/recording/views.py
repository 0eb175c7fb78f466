"""Rebuild probe snapshots at a time cursor from recorded Samples and Events (see replay.py).

Each function builds the probe's own snapshot type (probes/gpu/snapshot.py, probes/net/snapshot.py) with the
fields the recorded series carry, the rest at their defaults, so the screens read a recording exactly as they
read a live agent.
"""
from __future__ import annotations

from dataclasses import fields
from types import UnionType
from typing import Any, Protocol, get_args, get_type_hints

from gpusleuth.probes.gpu.fields import decode_reasons
from gpusleuth.probes.gpu.snapshot import GpmMetrics, GpuSnapshot, GpuState
from gpusleuth.probes.net.snapshot import DirectionTotals, InterfaceState, LastBurst, NetSnapshot

STALE_NS = 5_000_000_000  # a GPU value older than this at the cursor is not shown
GPM = frozenset(f.name for f in fields(GpmMetrics))
# Recorded "gpu.<field>" series are numeric GpuState fields (probes/gpu/device.py CORE_SERIES); samples are floats.
_KINDS = {name: set(get_args(t)) if isinstance(t, UnionType) else {t}
          for name, t in get_type_hints(GpuState).items()}
GPU_FIELDS = frozenset(name for name, kinds in _KINDS.items() if kinds & {int, float})
INT_FIELDS = frozenset(name for name, kinds in _KINDS.items() if int in kinds and float not in kinds)


class SeriesTable(Protocol):
    t: Any
    value: Any
    labels: list[dict[str, str]]

    def window(self, lo: int, hi: int) -> range: ...


def gpu_snapshot(tables: dict[str, SeriesTable], c: int) -> GpuSnapshot | None:
    """Each GPU's latest recorded value per series in the last few seconds."""
    gpus: dict[str, GpuState] = {}
    for name, table in tables.items():
        field = name[4:]
        if not name.startswith("gpu.") or (field not in GPU_FIELDS and field not in GPM):
            continue  # per-process series and NVML's own sample buffers ("gpu.util_pct.nvml") are not GPU fields
        seen: set[str] = set()
        for i in reversed(table.window(c - STALE_NS, c)):
            gpu = table.labels[i].get("gpu", "?")
            if gpu in seen or not gpu.isdigit():
                continue
            seen.add(gpu)
            g = gpus.get(gpu)
            if g is None:
                g = gpus[gpu] = GpuState(index=int(gpu), name=f"GPU {gpu}")
            value = float(table.value[i])
            if field in GPM:
                setattr(g.gpm, field, value)
            else:
                setattr(g, field, int(value) if field in INT_FIELDS else value)
    if not gpus:
        return None
    for g in gpus.values():
        if g.clock_event_reasons is not None:
            g.clock_event_reason_names = decode_reasons(g.clock_event_reasons)
    return GpuSnapshot(t_ns=c, gpus=sorted(gpus.values(), key=lambda g: g.index))


def net_snapshot(tables: dict[str, SeriesTable], bursts: list[dict[str, Any]], lo: int,
                 c: int) -> NetSnapshot | None:
    """Interfaces with byte/packet totals over (lo, c], burst counts and the last burst (from events)."""
    interfaces: dict[str, InterfaceState] = {}
    for series in ("net.bytes", "net.packets"):
        table = tables.get(series)
        if table is None:
            continue
        for i in table.window(lo, c):
            lab = table.labels[i]
            d = _direction(interfaces, lab.get("interface", "?"), lab.get("direction", "?"))
            if series == "net.bytes":
                d.bytes += int(table.value[i])
            else:
                d.packets += int(table.value[i])
    for e in bursts:
        a = e.get("attrs") or {}
        d = _direction(interfaces, a.get("interface", "?"), a.get("direction", "?"))
        d.bursts += 1
        d.last_burst = LastBurst(e["start_ns"], e["end_ns"], a.get("bytes", 0), a.get("peak_bps", 0.0))
    return NetSnapshot(t_ns=c, interfaces=interfaces) if interfaces else None


def _direction(interfaces: dict[str, InterfaceState], iface: str, direction: str) -> DirectionTotals:
    info = interfaces.setdefault(iface, InterfaceState())
    return info.directions.setdefault(direction, DirectionTotals())


def series_points(tables: dict[str, SeriesTable], lo: int, hi: int) -> dict[str, list[tuple[int, float]]]:
    """Sparkline series (same keys as the live history) over (lo, hi]."""
    out: dict[str, list[tuple[int, float]]] = {}
    for name, table in tables.items():
        if name.startswith("gpu.") and not name.startswith("gpu.process."):
            for i in table.window(lo, hi):
                key = f"gpu.{table.labels[i].get('gpu', '?')}.{name[4:]}"
                out.setdefault(key, []).append((int(table.t[i]), float(table.value[i])))
    table = tables.get("net.bytes")
    if table is not None:
        last: dict[str, int] = {}
        for i in table.window(lo - STALE_NS, hi):
            lab = table.labels[i]
            key = f"net.{lab.get('interface')}.{lab.get('direction')}_bps"
            t, prev = int(table.t[i]), last.get(key)
            last[key] = t
            if prev is not None and t > prev and t > lo:  # bytes since the previous poll of the same ring
                out.setdefault(key, []).append((t, float(table.value[i]) * 8e9 / (t - prev)))
    return out


def window_rows(tables: dict[str, SeriesTable], prefix: str, lo: int, hi: int) -> list[dict[str, Any]]:
    """Per (pid, comm[, syscall]) count and time over (lo, hi] from `<prefix>.count` / `<prefix>.seconds`."""
    rows: dict[tuple, dict[str, Any]] = {}
    for field, scale in (("count", 1.0), ("seconds", 1e9)):
        table = tables.get(f"{prefix}.{field}")
        if table is None:
            continue
        for i in table.window(lo, hi):
            lab = table.labels[i]
            key = (lab.get("pid", "0"), lab.get("comm", ""), lab.get("syscall"))
            row = rows.get(key)
            if row is None:
                row = rows[key] = {"pid": int(key[0]) if str(key[0]).isdigit() else 0, "comm": key[1],
                                   "count": 0, "sum_ns": 0, "buckets": None}
                if key[2] is not None:
                    row["syscall"] = key[2]
            row["count" if field == "count" else "sum_ns"] += int(float(table.value[i]) * scale)
    return [r for r in rows.values() if r["count"] > 0]


def requests_from_events(events: list[dict[str, Any]], c: int) -> list[dict[str, Any]]:
    """Requests rebuilt from the span intake's `request.<phase>` events (as `requests` shapes them), newest last."""
    by_id: dict[tuple, dict[str, Any]] = {}
    for e in events:
        kind, a = str(e.get("kind", "")), e.get("attrs") or {}
        rid = a.get("request_id")
        if not kind.startswith("request.") or not rid or e["start_ns"] > c:
            continue
        r = by_id.setdefault((e.get("pid"), rid), {
            "request_id": rid, "pid": e.get("pid"), "rank": a.get("rank"), "start_ns": e["start_ns"], "end_ns": None,
            "queue_s": None, "ttft_s": None, "tpot_s": None, "e2e_s": None, "prompt_tokens": None,
            "output_tokens": None, "status": "running"})
        phase = kind.split(".", 1)[1]
        if phase != "finished":
            r["start_ns"] = min(r["start_ns"], e["start_ns"])
        if phase == "queued":
            r["queue_s"] = (e["end_ns"] - e["start_ns"]) / 1e9
            r["prompt_tokens"] = a.get("tokens")
        elif phase == "finished" and e["end_ns"] <= c:
            r.update(end_ns=e["end_ns"], ttft_s=a.get("ttft_s"), tpot_s=a.get("tpot_s"), e2e_s=a.get("e2e_s"),
                     output_tokens=a.get("tokens"), status=a.get("status") or "finished")
    return sorted(by_id.values(), key=lambda r: r["end_ns"] or r["start_ns"])
