"""What each panel shows, derived from a Frame: plain functions, no widgets, so they are tested directly."""
from __future__ import annotations

import math
from typing import Any

from gpusleuth.probes.kernel.syscall_table import WAIT_SYSCALLS
from gpusleuth.probes.gpu.fields import NOT_THROTTLING, decode_reasons
from gpusleuth.probes.bpf.log2_hist import quantile_from_buckets
from gpusleuth.tui import fmt
from gpusleuth.tui.source import Frame

STATE_MARK = {"ok": "●", "degraded": "◐", "unavailable": "✖", "stopped": "○", "recorded": "●", "absent": "○"}
# spans snapshot keys we understand for engine gauges, newest name first
QUEUE_KEYS = ("queue_depth", "num_waiting", "waiting")
RUNNING_KEYS = ("num_running", "running")
KV_KEYS = ("kv_usage", "kv_cache_usage")


def missing_reason(frame: Frame, probe: str) -> str | None:
    """Why `probe` has no snapshot in this frame (None when it has one)."""
    if frame.snapshots.get(probe):
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


def gpu_rows(snap: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One normalised row per GPU: percentages 0..100, throttle reasons that are real slowdowns."""
    rows = []
    for g in (snap or {}).get("gpus") or []:
        gpm = g.get("gpm") or {}
        mask = g.get("clock_event_reasons")
        names = g.get("clock_event_reason_names")
        if names is None and mask is not None:
            names = decode_reasons(int(mask))
        throttling = [n for n in names or [] if n not in decode_reasons(NOT_THROTTLING)]
        sm = gpm.get("sm_active")
        rows.append({
            "index": g.get("index"), "name": g.get("name") or f"GPU {g.get('index')}", "uuid": g.get("uuid", ""),
            "util": g.get("util_gpu_pct"), "sm_active": None if sm is None else sm * 100,
            "power": g.get("power_w"), "power_limit": g.get("power_limit_w") or g.get("enforced_power_limit_w"),
            "temp": g.get("gpu_temp_c"), "mem_used": g.get("fb_used_mib"), "mem_total": g.get("fb_total_mib"),
            "throttle": throttling, "throttle_since_ns": g.get("throttle_since_ns"),
            "is_lost": bool(g.get("is_lost")), "lost_reason": g.get("lost_reason", ""),
            "last_xid": g.get("last_xid") or 0, "is_mig": bool(g.get("is_mig")), "raw": g})
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


def is_idle_wait(row: dict[str, Any]) -> bool:
    """A syscall that blocks by design (epoll_wait, futex, nanosleep ...): slow without being a problem."""
    return row.get("syscall") in WAIT_SYSCALLS


def top_latency(rows: list[dict[str, Any]], n: int | None = None, text_filter: str = "",
                sort: str = "p99", is_waits_hidden: bool = False) -> list[dict[str, Any]]:
    """Window rows ranked slowest first (p99 where buckets exist, else average)."""
    if is_waits_hidden:
        rows = [r for r in rows if not is_idle_wait(r)]
    needle = text_filter.lower()
    if needle:
        rows = [r for r in rows if needle in f"{r.get('comm', '')} {r.get('pid', '')} {r.get('syscall', '')}".lower()]
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
    rows = []
    for iface, info in sorted(((frame.snapshots.get("net") or {}).get("interfaces") or {}).items()):
        for direction, d in sorted((info.get("directions") or {}).items()):
            points = frame.series.get(f"net.{iface}.{direction}_bps") or []
            rows.append({"iface": iface, "direction": direction, "kind": info.get("kind", ""),
                         "speed_mbps": info.get("speed_mbps"), "bps": points[-1][1] if points else None,
                         "series": points, "bursts": int(d.get("bursts", 0)), "last_burst": d.get("last_burst"),
                         "bytes": d.get("bytes"), "packets": d.get("packets"), "qdisc": info.get("qdisc"),
                         "threshold_bps": info.get("threshold_bps")})
    return rows


def _first(d: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((d[k] for k in keys if d.get(k) is not None), None)


def engine_gauges(spans: dict[str, Any] | None) -> dict[str, Any]:
    """In-flight requests, and queue depth / running / KV usage where the engines report them, from the
    span-intake snapshot (per-sender values summed; KV usage: the fullest engine)."""
    if not spans:
        return {}
    out: dict[str, Any] = {}
    if spans.get("in_flight") is not None:
        out["in_flight"] = spans["in_flight"]
    parts = [spans, *(v for v in (spans.get("senders") or {}).values() if isinstance(v, dict))]
    for key, names in (("queue", QUEUE_KEYS), ("running", RUNNING_KEYS), ("kv", KV_KEYS)):
        vals = [v for p in parts if (v := _first(p, names)) is not None]
        if vals:
            out[key] = max(vals) if key == "kv" else sum(vals)
    return out


def engine_stats(frame: Frame, window_s: float = 60.0) -> dict[str, Any]:
    """Request rate and TTFT/TPOT/e2e percentiles over finished requests of the last `window_s` (or the last 200)."""
    reqs = [r for r in frame.requests or [] if r.get("end_ns")]
    recent = [r for r in reqs if r["end_ns"] >= frame.t_ns - window_s * 1e9]
    basis = recent or reqs
    out: dict[str, Any] = {"n": len(basis), "is_recent": bool(recent), "rps": len(recent) / window_s}
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


def event_matches(e: dict[str, Any], query: str) -> bool:
    """Filter: whitespace-separated terms, all must match; `kind:`, `pid:`, `source:`, `comm:` or free text."""
    for term in query.lower().split():
        key, _, val = term.partition(":")
        if val and key in ("kind", "source", "comm"):
            if val not in str(e.get(key, "")).lower():
                return False
        elif val and key == "pid":
            if str(e.get("pid")) != val:
                return False
        elif term not in f"{e.get('kind', '')} {e.get('source', '')} {e.get('comm', '')} {e.get('pid', '')} " \
                         f"{event_detail(e)}".lower():
            return False
    return True
