"""The agent under load as a new user runs it (issue 20): agent defaults, the tiny engine at --rate req/s from a
thread-per-request client (this process: its comm matches the default `python*` watch), --idle watched processes,
process churn, /metrics scraped every second (text and OpenMetrics in turn), and a real Prometheus at 1 s.

Reports against the targets: scrape p99 <= 50 ms and <= 500 kB; Prometheus `up` = 1 throughout; span loss 0
(the engine's sent + dropped vs the agent's received); in-flight back to the engine's running count; agent RSS max
<= 250 MB with a flat last 10 minutes; series bounded; agent CPU <= 3 % of a core. The 1-hour soak is
`--duration 3600`.

Run as root:  .venv/bin/python benchmarks/bench_agent_load.py --duration 600 --out benchmarks/results/agent_load.json
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from agent_load_parts import Churn, IdleProcesses, Prometheus, ResourceLog, Scraper
from bench_common import log, write_result
from gpusleuth.agent.cli.loadgen import LoadGenerator
from gpusleuth.agent.control.client import ControlClient
from gpusleuth.agent.harness import AGENT, free_port, wait_for, write_config


def _get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


def _value(text: str, name: str, labels: str = "") -> float:
    """Sum of the samples of `name` whose label text contains `labels`."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        if labels in (m.group(1) or ""):
            total += float(m.group(2))
    return total


def _families(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*?)(_bucket|_count|_sum|_total|_created)?[{ ]", text, re.M):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:15])


def _ok(url: str) -> bool:
    try:
        _get(url)
        return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600, help="seconds of load")
    ap.add_argument("--rate", type=float, default=20, help="requests per second")
    ap.add_argument("--idle", type=int, default=28, help="idle watched processes (+ the engine and this client)")
    ap.add_argument("--churn-s", type=float, default=2.0, help="a short-lived watched child every N s (0: none)")
    ap.add_argument("--no-prometheus", action="store_true")
    ap.add_argument("--trace-memory", action="store_true", help="trace the agent's allocations from a third of "
                    "the run on (slows it) and add the top sites of what is still alive at the end to the result")
    ap.add_argument("--segment-age-s", type=float, help="recorder.segment_max_age_s (compactions sooner than the "
                    "default 10 minutes, to see their memory in a short run)")
    ap.add_argument("--no-recorder", action="store_true", help="run the agent without its recorder (to tell its "
                    "share of memory and CPU)")
    ap.add_argument("--out", default="benchmarks/results/agent_load.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gs-load-"))
    agent_port, engine_port = free_port(), free_port()
    sock = tmp / "spans.sock"
    config = write_config(tmp, None, extra=f'\n[probes.spans]\nsocket = "{sock}"\n', flush_s=None,
                          listen=f"127.0.0.1:{agent_port}", watch=None)
    if args.no_recorder:
        config.write_text(config.read_text().replace("[recorder]\n", "[recorder]\nis_enabled = false\n"))
    if args.segment_age_s:
        config.write_text(config.read_text().replace(
            "[recorder]\n", f"[recorder]\nsegment_max_age_s = {args.segment_age_s}\n"))
    agent_url, engine_url = f"http://127.0.0.1:{agent_port}/metrics", f"http://127.0.0.1:{engine_port}"
    agent = subprocess.Popen([AGENT, "--config", str(config), "start", "--foreground"], stdin=subprocess.DEVNULL,
                             stdout=open(tmp / "agent.out", "w"), stderr=subprocess.STDOUT)
    control = str(tmp / "agent.sock")
    procs: list = []
    idle = prom = None
    try:
        wait_for(lambda: _ok(agent_url) and sock.exists(), timeout=300, interval=0.5)
        log(f"agent up (pid {agent.pid}); starting the engine")
        engine = subprocess.Popen([sys.executable, "-m", "gpusleuth.engine", "serve", "--preset", "tiny",
                                   "--cpu-threads", "1", "--host", "127.0.0.1", "--port", str(engine_port)],
                                  env={**os.environ, "GPUSLEUTH_SPAN_SOCKET": str(sock)}, stdin=subprocess.DEVNULL,
                                  stdout=open(tmp / "engine.out", "w"), stderr=subprocess.STDOUT)
        procs.append(engine)
        wait_for(lambda: _ok(engine_url + "/health"), timeout=300, interval=0.5)
        idle = IdleProcesses(args.idle)
        resources = ResourceLog(agent.pid)
        if not args.no_prometheus and Prometheus.available():
            prom = Prometheus(tmp, f"127.0.0.1:{agent_port}", free_port())
            prom.start()
        scraper = Scraper(agent_url)
        scraper.start()
        churn = Churn(args.churn_s) if args.churn_s > 0 else None
        # short completions: the tiny engine on two cores keeps up with 20 req/s, so the agent sees that rate
        load = LoadGenerator(engine_url, rate_per_s=args.rate, max_tokens=(2, 8), prompt_words=(4, 24),
                             num_workers=64)
        load.start()
        t0 = time.monotonic()
        log(f"load {args.rate:g} req/s for {args.duration:g} s; {args.idle} idle processes; scrapes every 1 s")
        is_tracing = False
        while time.monotonic() - t0 < args.duration:
            time.sleep(min(60.0, args.duration - (time.monotonic() - t0)))
            if args.trace_memory and not is_tracing and time.monotonic() - t0 >= args.duration / 3:
                with ControlClient(control, timeout=60) as client:
                    client.call("memory", trace=True)
                is_tracing = True
            s = scraper.scrapes[-1] if scraper.scrapes else None
            log(f"t={time.monotonic() - t0:.0f}s sent {load.stats.sent} ok {load.stats.ok}; last scrape "
                f"{s.seconds * 1e3 if s else 0:.0f} ms {s.bytes if s else 0} B; rss "
                f"{resources.points[-1][1] if resources.points else 0:.0f} MB")
        load.stop()
        if churn:
            churn.stop()
        time.sleep(3)  # let the last requests finish and their spans arrive
        with ControlClient(control, timeout=300) as client:  # the allocator's view (and what grew, when traced)
            memory = client.call("memory", limit=40, trace=False if args.trace_memory else None)
        engine_metrics = _get(engine_url + "/metrics")
        time.sleep(2.5)  # every span sent by now has been taken in by the next render (the engine sends more since)
        agent_metrics = _get(agent_url, 120)
        up = prom.up_summary(int(min(args.duration, 600))) if prom else None
        scraper.stop()
        resources.stop()
        sent = _value(engine_metrics, "gpusleuth_engine_spans_sent_total")
        dropped = _value(engine_metrics, "gpusleuth_engine_spans_dropped_total")
        received = _value(agent_metrics, "gpusleuth_spans_received_total", f'pid="{engine.pid}"')
        running = _value(engine_metrics, "vllm:num_requests_running") + _value(engine_metrics,
                                                                               "vllm:num_requests_waiting")
        in_flight = _value(agent_metrics, "gpusleuth_requests_in_flight")
        result = {
            "benchmark": "bench_agent_load", "host": os.uname().nodename, "cpus": os.cpu_count(),
            "duration_s": args.duration, "rate": args.rate, "idle_processes": args.idle,
            "churned_processes": churn.started if churn else 0,
            "load": {"sent": load.stats.sent, "ok": load.stats.ok, "rejected": load.stats.rejected,
                     "failed": load.stats.failed},
            "scrape": scraper.summary(), "prometheus": up,
            "spans": {"engine_sent": sent, "engine_dropped": dropped, "agent_received_2s_later": received,
                      "agent_queue_drops": _value(agent_metrics, "gpusleuth_span_datagrams_rejected_total",
                                                  'reason="queue_full"'),
                      "engine_deferred": _value(engine_metrics, "gpusleuth_engine_spans_deferred_total"),
                      "lost": max(0.0, sent + dropped - received) + dropped,
                      "loss_pct": 100 * (max(0.0, sent - received) + dropped) / (sent + dropped)
                      if sent + dropped else None},
            "in_flight": {"agent": in_flight, "engine_running_and_waiting": running},
            "series_now": len(re.findall(r"^[a-zA-Z_:]", agent_metrics, re.M)),
            "top_families": _families(agent_metrics),
            "agent": resources.summary(),
        }
        result["memory"] = memory
        path = write_result(args.out, result)
        summary = {k: result[k] for k in ("scrape", "prometheus", "spans", "in_flight", "series_now")}
        log(f"wrote {path}: {summary} agent: { {k: v for k, v in result['agent'].items() if k != 'points'} }")
        return 0
    finally:
        if idle is not None:
            idle.stop()
        if prom is not None:
            prom.stop()
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        agent.terminate()
        agent.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
