"""Rebuild snapshot-shaped state at a time cursor from recorded Samples and Events (see replay.py).

Each function returns the subset of a probe's snapshot schema that the recorded series carry, so the screens
read a recording exactly as they read a live agent.
"""
from __future__ import annotations

from typing import Any, Protocol

from gpusleuth.probes.gpu.fields import decode_reasons

STALE_NS = 5_000_000_000  # a GPU value older than this at the cursor is not shown
GPM = ("sm_active", "sm_occupancy", "tensor_active", "dram_active")


class SeriesTable(Protocol):
    t: Any
    value: Any
    labels: list[dict[str, str]]

    def window(self, lo: int, hi: int) -> range: ...


def gpu_snapshot(tables: dict[str, SeriesTable], c: int) -> dict[str, Any] | None:
    """{"t_ns", "gpus": [...]} with each GPU's latest recorded value per series in the last few seconds."""
    gpus: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        if not name.startswith("gpu.") or name.startswith("gpu.process."):
            continue
        field = name[4:]
        seen: set[str] = set()
        for i in reversed(table.window(c - STALE_NS, c)):
            gpu = table.labels[i].get("gpu", "?")
            if gpu in seen:
                continue
            seen.add(gpu)
            g = gpus.setdefault(gpu, {"index": int(gpu) if gpu.isdigit() else gpu, "name": f"GPU {gpu}",
                                      "gpm": {}, "processes": [], "is_lost": False})
            if field in GPM:
                g["gpm"][field] = float(table.value[i])
            else:
                g[field] = float(table.value[i])
    if not gpus:
        return None
    for g in gpus.values():
        mask = g.get("clock_event_reasons")
        if mask is not None:
            g["clock_event_reasons"] = int(mask)
            g["clock_event_reason_names"] = decode_reasons(int(mask))
    return {"t_ns": c, "gpus": sorted(gpus.values(), key=lambda g: str(g["index"]))}


def net_snapshot(tables: dict[str, SeriesTable], bursts: list[dict[str, Any]], lo: int,
                 c: int) -> dict[str, Any] | None:
    """Interfaces with byte/packet totals over (lo, c], burst counts and the last burst (from events)."""
    interfaces: dict[str, dict[str, Any]] = {}
    for series, field in (("net.bytes", "bytes"), ("net.packets", "packets")):
        table = tables.get(series)
        if table is None:
            continue
        for i in table.window(lo, c):
            lab = table.labels[i]
            d = _direction(interfaces, lab.get("interface", "?"), lab.get("direction", "?"))
            d[field] += float(table.value[i])
    for e in bursts:
        a = e.get("attrs") or {}
        d = _direction(interfaces, a.get("interface", "?"), a.get("direction", "?"))
        d["bursts"] += 1
        d["last_burst"] = {"start_ns": e["start_ns"], "end_ns": e["end_ns"], "bytes": a.get("bytes"),
                           "peak_bps": a.get("peak_bps")}
    return {"t_ns": c, "interfaces": interfaces} if interfaces else None


def _direction(interfaces: dict, iface: str, direction: str) -> dict[str, Any]:
    info = interfaces.setdefault(iface, {"kind": "", "speed_mbps": None, "directions": {}, "qdisc": None})
    return info["directions"].setdefault(direction, {"bytes": 0.0, "packets": 0.0, "bursts": 0, "last_burst": None})


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
