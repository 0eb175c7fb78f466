"""The acceptance run of the OTLP intake: a vLLM-like frontend (the OpenTelemetry SDK and OTLP/gRPC exporter, vLLM's
attribute names) sends its request spans to a real agent while it also does a slow syscall: `explain` on that
request shows its phases and blames the syscall on the sender's own thread, and the trace the agent exports for it
(to a collector built on opentelemetry-proto) carries that verdict in the sender's own trace."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from gpusleuth.agent.control.client import ControlClient
from gpusleuth.agent.harness import free_port, run_agent, wait_for, write_config
from tests.test_otlp_export import Collector, roots_by_request
from tests.test_otlp_intake import emit

pytestmark = pytest.mark.root


@pytest.fixture
def agent():
    tmp = Path(tempfile.mkdtemp(prefix="gpusleuth-otlp-"))
    port = free_port()
    collector = Collector()
    config = write_config(tmp, ["syscalls", "sched", "spans", "otlp"], extra=(
        f'\n[probes.spans]\nsocket = "{tmp}/spans.sock"\n'
        f'\n[probes.otlp]\nhttp_listen = ""\ngrpc_listen = "127.0.0.1:{port}"\nspan_socket = "{tmp}/spans.sock"\n'
        '\n[probes.syscalls]\nslow_threshold_ms = 20.0\n'))
    config.write_text(config.read_text().replace("[exporter]\n", f'[exporter]\notlp_traces_endpoint = "{collector.url}"\n'))
    assert run_agent("--config", str(config), "start").returncode == 0
    client = ControlClient(str(tmp / "agent.sock"))
    yield tmp, client, port, collector
    client.close()
    run_agent("--config", str(config), "stop")
    collector.close()
    shutil.rmtree(tmp, ignore_errors=True)


def test_explain_of_an_otlp_request_shows_its_phases_and_blames_the_senders_syscall(agent):
    tmp, client, port, collector = agent
    assert client.call("status")["probes"]["otlp"]["state"] == "ok"
    proc = emit(f"127.0.0.1:{port}", "grpc", "1", 30, str(tmp / "stall.bin"))
    try:
        pid = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "done"
        wait_for(lambda: len([r for r in client.call("requests") if r["pid"] == pid]) == 30, timeout=20)
        wait_for(lambda: pid in client.call("status")["watched_pids"], timeout=10)
        proc.stdin.write("slow\n")
        proc.stdin.flush()
        word, fsync_ms = proc.stdout.readline().split()
        assert word == "sent"
        if float(fsync_ms) < 40:
            pytest.skip(f"fsync of 128 MiB took only {float(fsync_ms):.1f} ms here: not much of a stall")
        row = wait_for(lambda: next((r for r in client.call("requests") if r["request_id"] == "cmpl-slow"), None),
                       timeout=20)
        wait_for(lambda: any(d["request_id"] == "cmpl-slow" for d in client.call("diagnoses")), timeout=15)
        report = client.call("explain", request_id="cmpl-slow")
        finished = client.call("events", kinds=["request.finished"], pid=pid, limit=100)
        exported = wait_for(lambda: roots_by_request(collector).get("cmpl-slow"), timeout=20)
    finally:
        proc.communicate("exit\n", timeout=30)
    assert row["pid"] == pid and row["received_s"] >= float(fsync_ms) / 1e3  # the stall was input processing
    assert [p["phase"] for p in report["phases"]] == ["received", "queued", "prefill", "decode", "stream"]
    parts = {p["part"]: p for p in report["budget"]["parts"]}
    assert parts["arrival"]["excess_ms"] >= 0.6 * float(fsync_ms)  # against the 30 requests before it
    top = report["verdicts"][0]
    assert top["cause"] == "blocking_io", report["verdicts"]
    assert top["culprit"]["pid"] == pid and top["culprit"]["tid"] == pid  # the frontend's main thread
    assert top["culprit"]["syscall"] in ("fsync", "(D state)") and top["is_likely"] and top["share"] >= 0.5
    root, attrs, children = exported
    assert attrs["gpusleuth.verdict.cause"] == "blocking_io" and attrs["gpusleuth.verdict.culprit.pid"] == pid
    assert attrs["gpusleuth.budget.excess_ms"] >= 0.6 * float(fsync_ms) and attrs["gpusleuth.verdict.runbook"]
    assert {c.name for c in children} == {"received", "queued", "prefill", "decode", "stream"}
    trace_id = next(e["attrs"]["trace_id"] for e in finished if e["attrs"]["request_id"] == "cmpl-slow")
    assert root.trace_id.hex() == trace_id  # joins the frontend's own trace in the collector
