"""Human-readable text for `agent status` and `agent probes`."""
from __future__ import annotations

from typing import Any


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_duration(s: float) -> str:
    s = int(s)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d" if d else "", f"{h}h" if h else "", f"{m}m" if m else "", f"{s}s"]
    return " ".join(p for p in parts if p)


def format_status(st: dict[str, Any]) -> str:
    lines = [f"gpusleuth agent: running (pid {st['pid']}), up {human_duration(st['uptime_s'])}",
             f"config: {st['config_source']}", "probes:"]
    for name, p in st["probes"].items():
        detail = p["reason"] or p["path"]
        lines.append(f"  {name:<9} {p['state']:<12} {detail}")
        if p.get("polls"):
            lines.append(f"  {'':<9} {'':<12} polls {p['polls']}, errors {p['poll_errors']}, "
                         f"last poll {p['last_poll_s'] * 1e3:.1f} ms")
    s = st["store"]
    lines.append(f"store: {s['samples']:,} samples, {s['events']:,} events (~{human_bytes(s['approx_bytes'])}); "
                 f"dropped {s['samples_dropped']:,} samples, {s['events_dropped']:,} events")
    rec = st.get("recorder")
    if rec:
        err = f"; LAST ERROR: {rec['last_error']}" if rec.get("last_error") else ""
        lines.append(f"recording: {rec['directory']} ({human_bytes(rec['bytes'])}, {rec['segments']} segments, "
                     f"{rec['parts']} parts){err}")
    else:
        lines.append("recording: off")
    lines.append(f"exporter: {st['exporter'] or 'off'}")
    pids = st["watched_pids"]
    shown = ", ".join(map(str, pids[:10])) + (" ..." if len(pids) > 10 else "")
    lines.append("watching: every process" if st["watch_all"] else f"watching: {len(pids)} processes ({shown})")
    lines.append(f"memory: {human_bytes(st['rss_bytes'])} resident")
    return "\n".join(lines)


def format_probes(reqs: dict[str, Any], enabled: list[str]) -> str:
    lines = []
    for name, info in reqs.items():
        flag = "enabled" if name in enabled else "disabled"
        if not info["loadable"]:
            lines.append(f"{name} ({flag}): cannot load: {info['error']}")
            continue
        lines.append(f"{name} ({flag}): {'ready' if info['ready'] else 'NOT READY'}")
        for r in info["requirements"]:
            mark = "ok " if r["met"] else "MISSING"
            fix = "" if r["met"] else f"  -> {r['fix']}"
            detail = f" ({r['detail']})" if r["detail"] else ""
            lines.append(f"  [{mark}] {r['name']}{detail}{fix}")
    return "\n".join(lines)
