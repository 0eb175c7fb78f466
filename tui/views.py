"""What each panel shows, derived from a Frame: plain functions, no widgets, so they are tested directly."""
from __future__ import annotations

import math
from typing import Any

from gpusleuth.probes.gpu.fields import NOT_THROTTLING, decode_reasons
from gpusleuth.probes.gpu.snapshot import GpuSnapshot
from gpusleuth.probes.bpf.log2_hist import quantile_from_buckets
from gpusleuth.probes.net.snapshot import NetSnapshot
from gpusleuth.probes.spans.snapshot import SpansSnapshot
from gpusleuth.tui import fmt, query
from gpusleuth.tui.idle import is_idle_row
from gpusleuth.tui.source import Frame

STATE_MARK = {"ok": "●", "degraded": "◐", "unavailable": "✖", "stopped": "○", "recorded": "●", "absent": "○"}


def missing_reason(frame: Frame, probe: str) -> str | None:
    """Why `probe` has no snapshot in this frame (None when it has one)."""
    if frame.snapshots.get(probe) is not None:
        return None
    probes = (frame.status or {}).get("probes")
    if probes is None:
        return frame.error or "no agent status"
    info = probes.get(probe)
    if info is None:
        return f"the {probe} probe is not enabled (add \"{probe}\" to probes.enabled in the agent config)"
    state, reason = info.get("state", "?"), info.get("reason") or ""
    if state in ("unavailable", "stopped"):
        return f"{probe} probe {state}: {reason or 'no reason given'}"
    if state == "recorded":
        return f"no {probe} data near the cursor"
    if state == "absent":
        return reason or f"no {probe} records"
    return f"{probe} probe {state}; waiting for its first poll"


def probe_states(status: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(name, state, reason) per probe, in the agent's order."""
    return [(n, p.get("state", "?"), p.get("reason") or "") for n, p in ((status or {}).get("probes") or {}).items()]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    return vals[min(len(vals) - 1, max(0, math.ceil(q * len(vals)) - 1))]


def gpu_rows(snap: GpuSnapshot | None) -> list[dict[str, Any]]:
    """One normalised row per GPU: percentages 0..100, throttle reasons that are real slowdowns; "raw" is the
    GpuState itself."""
    rows = []
    for g in (snap.gpus if snap is not None else []):
        mask, names = g.clock_event_reasons, g.clock_event_reason_names
        if names is None and mask is not None:
            names = decode_reasons(int(mask))
        throttling = [n for n in names or [] if n not in decode_reasons(NOT_THROTTLING)]
        sm = g.gpm.sm_active
        rows.append({
            "index": g.index, "name": g.name or f"GPU {g.index}", "uuid": g.uuid,
            "util": g.util_gpu_pct, "sm_active": None if sm is None else sm * 100,
            "power": g.power_w, "power_limit": g.power_limit_w,
            "temp": g.gpu_temp_c, "mem_used": g.fb_used_mib, "mem_total": g.fb_total_mib,
            "throttle": throttling, "throttle_since_ns": g.throttle_since_ns,
            "is_lost": g.is_lost, "lost_reason": g.lost_reason,
            "last_xid": g.last_xid, "is_mig": g.is_mig, "raw": g})
    return rows


def with_quantiles(row: dict[str, Any]) -> dict[str, Any]:
    """A window row plus avg/p50/p99/max in ns (p50/p99/max None without buckets)."""
    out = dict(row)
    out["avg_ns"] = row["sum_ns"] / row["count"] if row.get("count") else None
    b = row.get("buckets")
    if b:
        out["p50_ns"] = quantile_from_buckets(b, 0.5)
        out["p99_ns"] = quantile_from_buckets(b, 0.99)
        out["max_ns"] = float(1 << max(b))
    else:
        out["p50_ns"] = out["p99_ns"] = out["max_ns"] = None
    return out


class Memo:
    """Keeps one computed value until its inputs change: `rows` by identity (sources hand the same list object
    while the probe has not polled again), the rest by equality."""

    def __init__(self) -> None:
        self._rows: object = None
        self._extra: tuple = ()
        self._value: Any = None

    def get(self, rows: object, extra: tuple, compute) -> Any:
        if self._rows is not rows or self._extra != extra:
            self._value, self._rows, self._extra = compute(), rows, extra
        return self._value


def top_latency(rows: list[dict[str, Any]], n: int | None = None, text_filter: str = "",
                sort: str = "p99", is_waits_hidden: bool = False) -> list[dict[str, Any]]:
    """Window rows ranked slowest first (p99 where buckets exist, else average)."""
    if is_waits_hidden:
        rows = [r for r in rows if not is_idle_row(r)]
    terms = query.parse(text_filter)
    if terms:
        rows = [r for r in rows if query.matches(terms, r, f"{r.get('comm', '')} {r.get('pid', '')} "
                                                           f"{r.get('syscall', '')}")]
    if sort == "count":
        ranked = sorted(rows, key=lambda r: -r["count"])
    elif sort == "total":
        ranked = sorted(rows, key=lambda r: -r["sum_ns"])
    else:
        # the highest bucket bounds p99 from above: rank cheaply, then compute quantiles for the leaders only
        ranked = sorted(rows, key=lambda r: -(max(r["buckets"]) if r.get("buckets") else 0) * 1e12
                        - r["sum_ns"] / max(1, r["count"]))
    limit = n if n is not None else len(ranked)
    out = [with_quantiles(r) for r in ranked[: max(limit * 3, limit)]]
    if sort == "p99":
        out.sort(key=lambda r: -(r["p99_ns"] if r["p99_ns"] is not None else r["avg_ns"] or 0))
    return out[:limit]


def net_rows(frame: Frame) -> list[dict[str, Any]]:
    """Per interface and direction: current rate (last series point), bursts, last burst."""
    snap: NetSnapshot | None = frame.snapshots.get("net")
    rows = []
    for iface, info in sorted((snap.interfaces if snap is not None else {}).items()):
        for direction, d in sorted(info.directions.items()):
            points = frame.series.get(f"net.{iface}.{direction}_bps") or []
            rows.append({"iface": iface, "direction": direction, "kind": info.kind,
                         "speed_mbps": info.speed_mbps, "bps": points[-1][1] if points else None,
                         "series": points, "bursts": d.bursts, "last_burst": d.last_burst,
                         "bytes": d.bytes, "packets": d.packets, "qdisc": info.qdisc,
                         "threshold_bps": info.threshold_bps})
    return rows


def engine_gauges(spans: SpansSnapshot | None) -> dict[str, Any]:
    """In-flight requests, and queue depth / running / KV usage where the engines report them, from the
    span-intake snapshot (per-sender values summed; KV usage: the fullest engine)."""
    if spans is None:
        return {}
    out: dict[str, Any] = {"in_flight": spans.in_flight}
    senders = spans.senders.values()
    for key, vals in (("queue", [s.num_waiting for s in senders]), ("running", [s.num_running for s in senders]),
                      ("kv", [s.kv_usage for s in senders])):
        known = [v for v in vals if v is not None]
        if known:
            out[key] = max(known) if key == "kv" else sum(known)
    return out


def engine_stats(frame: Frame, window_s: float = 60.0) -> dict[str, Any]:
    """Request rate and TTFT/TPOT/e2e percentiles over finished requests of the last `window_s` (else all listed).

    "basis_s" is the span the rate covers: the window, or less when the source's list starts later
    (frame.requests_since_ns: a live agent keeps its newest probes.spans.recent_requests; a recording or an
    engine may have started less than a window ago)."""
    reqs = [r for r in frame.requests or [] if r.get("end_ns")]
    lo = frame.t_ns - window_s * 1e9
    recent = [r for r in reqs if r["end_ns"] >= lo]
    basis = recent or reqs
    since = max(lo, frame.requests_since_ns or lo)
    basis_s = max(1.0, min(window_s, (frame.t_ns - since) / 1e9))
    out: dict[str, Any] = {"n": len(basis), "is_recent": bool(recent), "rps": len(recent) / basis_s,
                           "basis_s": basis_s}
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        vals = [r.get(key) for r in basis]
        out[f"{key}_p50"], out[f"{key}_p99"] = percentile(vals, 0.5), percentile(vals, 0.99)
    out.update(engine_gauges(frame.snapshots.get("spans")))
    return out


def who(e: dict[str, Any]) -> str:
    """`comm(pid)` of an event, or a dash for host-wide events (no process)."""
    if not e.get("pid") and not e.get("comm"):
        return "—"
    return f"{e.get('comm') or '?'}({e.get('pid', '')})"


def event_detail(e: dict[str, Any]) -> str:
    """One-line summary of an event's attributes, by kind."""
    a = e.get("attrs") or {}
    kind, dur = e.get("kind", ""), fmt.dur_ns(e.get("end_ns", 0) - e.get("start_ns", 0))
    if kind == "slow_syscall":
        return f"{a.get('syscall', '?')} took {dur}"
    if kind == "runq_delay":
        return f"waited {dur} to run (behind {a.get('prev_comm', '?')}/{a.get('prev_pid', '?')})"
    if kind == "net.microburst":
        return (f"{a.get('interface', '?')} {a.get('direction', '')} {fmt.size(a.get('bytes'))} in {dur}, "
                f"peak {fmt.bps(a.get('peak_bps'))}")
    if kind == "net.skb_drop":
        return f"{a.get('count', 1)} skb dropped ({a.get('reason', '?')}), {fmt.size(a.get('bytes'))}"
    if kind == "net.tcp_retransmit":
        return (f"{a.get('segments', '?')} segments {fmt.size(a.get('bytes'))} "
                f"{a.get('local', '?')} → {a.get('remote', '?')}")
    if kind == "gpu_throttle":
        return f"GPU {a.get('gpu', '?')} throttled {dur}: {', '.join(a.get('reasons') or [])}"
    if kind == "gpu_xid":
        return f"GPU {a.get('gpu', '?')} XID {a.get('xid', '?')} {a.get('name', '')} ({a.get('severity', '')})"
    skip = {"top_flows", "request_id"}
    return ", ".join(f"{k}={v}" for k, v in a.items() if k not in skip and not isinstance(v, (dict, list)))[:200]


def event_fields(e: dict[str, Any]) -> dict[str, Any]:
    """What a filter's `field:` terms see of an event: its own fields and its attributes (`syscall:`, `state:`)."""
    attrs = e.get("attrs") or {}
    return {**{k: v for k, v in attrs.items() if not isinstance(v, (dict, list))},
            **{k: e.get(k) for k in ("kind", "source", "comm", "pid", "tid")}}


def event_matches(e: dict[str, Any], text: str | list[query.Term]) -> bool:
    """Whether an event passes a filter (tui/query.py): `kind:`, `pid:`, `source:`, `comm:`, any attribute, text."""
    terms = query.parse(text) if isinstance(text, str) else text
    line = f"{e.get('kind', '')} {e.get('source', '')} {e.get('comm', '')} {e.get('pid', '')} {event_detail(e)}"
    return query.matches(terms, event_fields(e), line)
