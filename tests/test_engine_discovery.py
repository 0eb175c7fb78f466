"""Engine discovery against a real process: a program named `vllm`, run as `vllm serve --port N`, serving its
metrics with prometheus_client (as vLLM does) under vLLM's metric names, is found, its child listed, its endpoint
scraped into Samples and the snapshot, shown on the TUI's overview, and watched by a real agent."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gpusleuth.agent.control.client import ControlClient
from gpusleuth.agent.harness import free_port, run_agent, wait_for, write_config
from gpusleuth.probes import snapshot_codec
from gpusleuth.probes.engines.kinds import kind_of
from gpusleuth.probes.engines.probe import EnginesConfig, EnginesProbe
from gpusleuth.probes.records import monotonic_ns
from gpusleuth.tui.screens.overview import discovered_lines

# vLLM's metric names (vllm/v1/metrics/loggers.py); 100 requests with a TTFT of 120 ms, 400 tokens 10 ms apart.
FAKE_VLLM = """#!{python}
import subprocess, sys, time
from prometheus_client import Gauge, Histogram, start_http_server
port = int(sys.argv[sys.argv.index("--port") + 1])
Gauge("vllm:num_requests_running", "running", ["model_name"]).labels("tiny").set(3)
Gauge("vllm:num_requests_waiting", "waiting", ["model_name"]).labels("tiny").set(1)
Gauge("vllm:kv_cache_usage_perc", "KV", ["model_name"]).labels("tiny").set(0.42)
ttft = Histogram("vllm:time_to_first_token_seconds", "TTFT", ["model_name"],
                 buckets=[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0])
itl = Histogram("vllm:inter_token_latency_seconds", "ITL", ["model_name"],
                buckets=[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5])
for _ in range(100):
    ttft.labels("tiny").observe(0.12)
for _ in range(400):
    itl.labels("tiny").observe(0.009)
start_http_server(port, addr="127.0.0.1")
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # its EngineCore
print(child.pid, flush=True)
sys.stdin.readline()
child.kill()
"""


@pytest.fixture
def fake_vllm(tmp_path):
    prog = tmp_path / "vllm"
    prog.write_text(FAKE_VLLM.format(python=sys.executable))
    prog.chmod(0o755)
    port = free_port()
    proc = subprocess.Popen([str(prog), "serve", "--port", str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    child = int(proc.stdout.readline())
    yield proc, child, port
    proc.communicate("exit\n", timeout=10)


def test_a_vllm_process_is_found_scraped_and_shown(fake_vllm):
    proc, child, port = fake_vllm
    probe = EnginesProbe(EnginesConfig(interval_s=0.5, rescan_interval_s=1.0))
    probe.start()
    try:
        def poll():
            got = probe.poll(monotonic_ns())
            eng = got.snapshot.engines.get(proc.pid)
            return got if eng is not None and eng.scrapes else None
        result = wait_for(poll, timeout=20)
    finally:
        probe.stop()
    snap = result.snapshot
    eng = snap.engines[proc.pid]
    assert eng.kind == "vllm" and eng.metrics_url == f"http://127.0.0.1:{port}/metrics" and not eng.scrape_error
    assert child in eng.child_pids and {proc.pid, child} <= set(snap.watch_pids)
    assert (eng.num_running, eng.num_waiting, eng.kv_usage) == (3, 1, 0.42)
    assert 0.1 < eng.ttft_p50_s <= 0.25 and 0.1 < eng.ttft_p99_s <= 0.25  # all 100 fell in (0.1, 0.25]
    assert 0.0 < eng.itl_p50_s <= 0.01 and eng.requests_in_window == 100
    samples = {(s.series, s.labels.get("le")): s for s in result.samples}
    assert samples[("engine.num_waiting", None)].value == 1
    assert samples[("engine.num_waiting", None)].labels == {"pid": str(proc.pid), "engine": "vllm"}
    assert samples[("engine.ttft_s.bucket", "0.1")].value == 0 and samples[("engine.ttft_s.bucket", "0.25")].value == 100
    assert samples[("engine.ttft_s.count", None)].value == 100
    # what the overview shows, from the snapshot as it crosses the control socket
    decoded = snapshot_codec.decode("engines", snapshot_codec.encode("engines", snap))
    line = next(str(t) for t in discovered_lines(decoded, 120) if f"vllm({proc.pid})" in str(t))
    assert f"127.0.0.1:{port}" in line and "running 3 queue 1 KV 42%" in line and "TTFT p50 1" in line


def test_engines_without_an_answering_endpoint_say_why(tmp_path):
    prog = tmp_path / "tritonserver"
    prog.write_text(f"#!{sys.executable}\nimport sys\nsys.stdin.readline()\n")
    prog.chmod(0o755)
    proc = subprocess.Popen([str(prog), "--metrics-port", str(free_port())], stdin=subprocess.PIPE, text=True)
    probe = EnginesProbe(EnginesConfig(rescan_interval_s=1.0))
    probe.start()
    try:
        snap = wait_for(lambda: (s := probe.poll(monotonic_ns()).snapshot).engines.get(proc.pid) and s, timeout=15)
    finally:
        probe.stop()
        proc.communicate("x\n", timeout=10)
    eng = snap.engines[proc.pid]
    assert eng.kind == "triton" and eng.metrics_url == "" and "refused" in eng.scrape_error.lower()
    assert "no metrics" in str(discovered_lines(snap, 120)[0])


@pytest.mark.parametrize("cmdline,comm,kind", [
    (["/usr/bin/python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"], "python3", "vllm"),
    (["/opt/venv/bin/vllm", "serve", "meta-llama/Llama-3.1-8B"], "vllm", "vllm"),
    (["/usr/bin/python3", "/opt/venv/bin/vllm", "serve", "m"], "vllm", "vllm"),
    (["/opt/venv/bin/vllm", "bench", "serve"], "vllm", None),  # vLLM's benchmark client, not a server
    (["python", "-m", "sglang.launch_server", "--model-path", "m"], "python", "sglang"),
    (["text-generation-launcher", "--model-id", "m"], "text-generation", "tgi"),
    (["trtllm-serve", "m"], "trtllm-serve", "tensorrt-llm"),
    (["/opt/tritonserver/bin/tritonserver", "--model-repository", "/m"], "tritonserver", "triton"),
    (["python3", "train.py"], "python3", None),
])
def test_kind_of_command_lines(cmdline, comm, kind):
    found = kind_of(cmdline, comm)
    assert (found.name if found else None) == kind


@pytest.mark.root
def test_the_agent_watches_discovered_engines(fake_vllm):
    proc, child, _ = fake_vllm
    tmp = Path(tempfile.mkdtemp(prefix="gpusleuth-engines-"))
    config = write_config(tmp, ["engines"], extra="\n[probes.engines]\ninterval_s = 0.5\nrescan_interval_s = 1.0\n")
    assert run_agent("--config", str(config), "start").returncode == 0
    try:
        with ControlClient(str(tmp / "agent.sock")) as client:
            watched = wait_for(lambda: {proc.pid, child} <= set(w := client.call("status")["watched_pids"]) and w,
                               timeout=20)
            snap = snapshot_codec.decode("engines", client.call("snapshot", sources=["engines"])["engines"])
    finally:
        run_agent("--config", str(config), "stop")
        shutil.rmtree(tmp, ignore_errors=True)
    assert os.getpid() not in watched
    assert snap.engines[proc.pid].kind == "vllm"
