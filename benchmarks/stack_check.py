"""What a running agent holds about a serving engine: the evidence for "every GPU sampled, spans from every rank,
joined with host signals" on a GPU host (issues 8 and 9).

Reads the agent over its control socket (and its Prometheus exporter, and the engine's /metrics when given):
- per GPU: NVML samples of utilisation and power in the last --window seconds, the latest values;
- per engine process: the ranks its spans came from, engine.step events per rank, and the host events (slow
  syscalls, run-queue delays, network) the kernel probes recorded for that process in the same window;
- the slowest recent request and the agent's explanation of it (host events that overlapped it);
- the exporter's DCGM_FI_DEV_GPU_UTIL series (one per GPU) and the engine's vllm: histograms.

    python3 benchmarks/stack_check.py --socket /run/gpusleuth/agent.sock --expect-gpus 4 --expect-ranks 4
exits 1 when an expectation does not hold, printing the JSON either way.
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from collections import Counter, defaultdict
from typing import Any

from gpusleuth.agent.control.client import ControlClient

HOST_KINDS_EXCLUDED = ("request.", "engine.")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def _series_lines(text: str, name: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(name + "{") or ln.startswith(name + " ")]


def gpu_evidence(c: ControlClient, lo: int) -> dict[str, Any]:
    per_gpu: dict[str, dict[str, Any]] = defaultdict(lambda: {"util_samples": 0, "power_samples": 0})
    for series, key in (("gpu.util_gpu_pct", "util"), ("gpu.power_w", "power")):
        for s in c.call("samples", series=series, start_ns=lo, limit=None):
            g = per_gpu[s["labels"].get("gpu", "?")]
            g[f"{key}_samples"] += 1
            g[f"max_{key}"] = max(g.get(f"max_{key}", 0.0), s["value"])
    snap = (c.call("snapshot", sources=["gpu"]) or {}).get("gpu") or {}
    for g in snap.get("gpus", []):
        per_gpu[str(g["index"])].update(name=g.get("name"), uuid=g.get("uuid"), is_lost=g.get("is_lost"),
                                        fb_used_mib=g.get("fb_used_mib"), sm_clock_mhz=g.get("sm_clock_mhz"))
    return dict(sorted(per_gpu.items()))


def engine_evidence(c: ControlClient, lo: int) -> dict[str, Any]:
    spans = (c.call("snapshot", sources=["spans"]) or {}).get("spans") or {}
    steps = c.call("events", start_ns=lo, kinds=["engine.step"], limit=None)
    steps_per = Counter((e["pid"], e["attrs"].get("rank")) for e in steps)
    senders = {}
    for pid, s in (spans.get("senders") or {}).items():
        host = Counter(e["kind"] for e in c.call("events", start_ns=lo, pid=int(pid), limit=None)
                       if not e["kind"].startswith(HOST_KINDS_EXCLUDED))
        senders[pid] = {"comm": s.get("comm"), "ranks": s.get("ranks"), "spans": s.get("spans"),
                        "steps_in_window": sum(n for (p, _), n in steps_per.items() if str(p) == pid),
                        "host_events_in_window": dict(host)}
    ranks = sorted({r for s in senders.values() for r in s["ranks"] or []})
    steps_by_rank = Counter()
    for (_, rank), n in steps_per.items():
        steps_by_rank[str(rank)] += n
    return {"senders": senders, "ranks": ranks, "steps_by_rank": dict(sorted(steps_by_rank.items())),
            "finished_total": spans.get("finished_total"), "watch_pids": spans.get("watch_pids")}


def slowest_explained(c: ControlClient) -> dict[str, Any] | None:
    recent = c.call("requests", limit=500)
    if not recent:
        return None
    worst = max(recent, key=lambda r: r.get("e2e_s") or 0)
    exp = c.call("explain", request_id=worst["request_id"])
    return {"request": worst, "verdicts": exp.get("verdicts", [])[:5], "steps": exp.get("steps"),
            "host_events": Counter(e["kind"] for e in exp.get("overlapping", [])),
            "idle_waits_hidden": exp.get("idle_waits_hidden")}


def capture(socket_path: str, window_s: float, exporter_url: str = "", engine_url: str = "") -> dict[str, Any]:
    with ControlClient(socket_path, timeout=60) as c:
        status = c.call("status")
        lo = status["monotonic_ns"] - int(window_s * 1e9)
        out: dict[str, Any] = {
            "probes": {n: p["state"] for n, p in status["probes"].items()},
            "probe_paths": {n: p.get("path", "") for n, p in status["probes"].items()},
            "agent_rss_mb": round(status["rss_bytes"] / 2**20, 1), "store": status["store"],
            "window_s": window_s, "gpus": gpu_evidence(c, lo), "engine": engine_evidence(c, lo),
            "slowest": slowest_explained(c)}
    if exporter_url:
        text = _get(exporter_url)
        out["exporter"] = {"DCGM_FI_DEV_GPU_UTIL": _series_lines(text, "DCGM_FI_DEV_GPU_UTIL"),
                           "series_total": sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))}
    if engine_url:
        text = _get(engine_url)
        out["engine_metrics"] = {n: _series_lines(text, n)[:3] for n in (
            "vllm:time_to_first_token_seconds_count", "vllm:inter_token_latency_seconds_count",
            "vllm:num_requests_running")}
    return out


def check(ev: dict[str, Any], expect_gpus: int, expect_ranks: int) -> list[str]:
    """Problems with the evidence (empty when every expectation holds)."""
    problems = [f"probe {n} is {s}" for n, s in ev["probes"].items() if s != "ok"]
    sampled = [g for g, v in ev["gpus"].items() if v["util_samples"] > 0 and not v.get("is_lost")]
    if expect_gpus and len(sampled) < expect_gpus:
        problems.append(f"{len(sampled)} GPUs sampled in the window, expected {expect_gpus}")
    ranks = ev["engine"]["ranks"]
    if expect_ranks and ranks != list(range(expect_ranks)):
        problems.append(f"spans from ranks {ranks}, expected 0..{expect_ranks - 1}")
    if expect_ranks and len(ev["engine"]["steps_by_rank"]) < expect_ranks:
        problems.append(f"engine.step events from {sorted(ev['engine']['steps_by_rank'])} only")
    if "exporter" in ev and expect_gpus and len(ev["exporter"]["DCGM_FI_DEV_GPU_UTIL"]) < expect_gpus:
        problems.append(f"exporter has {len(ev['exporter']['DCGM_FI_DEV_GPU_UTIL'])} DCGM_FI_DEV_GPU_UTIL series")
    return problems


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", default="/run/gpusleuth/agent.sock", help="the agent's control socket")
    p.add_argument("--window", type=float, default=30.0, help="seconds of history to count")
    p.add_argument("--exporter", default="", help="the agent's /metrics URL")
    p.add_argument("--engine", default="", help="the engine's /metrics URL")
    p.add_argument("--expect-gpus", type=int, default=0)
    p.add_argument("--expect-ranks", type=int, default=0)
    args = p.parse_args()
    ev = capture(args.socket, args.window, args.exporter, args.engine)
    ev["problems"] = check(ev, args.expect_gpus, args.expect_ranks)
    print(json.dumps(ev, indent=1, default=str))
    sys.exit(1 if ev["problems"] else 0)


if __name__ == "__main__":
    main()
