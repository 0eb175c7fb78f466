"""A real Prometheus server scrapes the agent's exporter; promtool checks the exposition (root, real eBPF)."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from gpusleuth.agent.harness import free_port, run_agent, wait_for, write_config
from tests.agent_helpers import exporter_port, spawn_python

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="Debian package prometheus not installed (agent/install.sh installs it)")]

WORKLOAD = """
import os, sys, time
print(os.getpid(), flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    os.getppid()
    time.sleep(0.001)
"""


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


@pytest.fixture
def agent_with_workload(tmp_path):
    workload = spawn_python(WORKLOAD)
    pid = int(workload.stdout.readline())
    config = write_config(tmp_path, ["syscalls", "sched"])
    config.write_text(config.read_text().replace("pids = []", "").replace("[watch]", f"[watch]\npids = [{pid}]"))
    assert run_agent("--config", str(config), "start").returncode == 0
    yield config, pid
    run_agent("--config", str(config), "stop")
    workload.kill()
    workload.wait()


def test_promtool_check_metrics_is_clean(agent_with_workload):
    config, pid = agent_with_workload
    url = f"http://127.0.0.1:{exporter_port(config)}/metrics"

    def exposition_with_workload():
        text = _get(url)
        return text if f'pid="{pid}"' in text else None

    text = wait_for(exposition_with_workload, timeout=20)
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == "", check.stdout + check.stderr


def test_prometheus_server_scrapes_the_workload_histogram(agent_with_workload, tmp_path):
    config, pid = agent_with_workload
    prom_port = free_port()
    prom_cfg = tmp_path / "prometheus.yml"
    prom_cfg.write_text(f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: gpusleuth
    static_configs:
      - targets: ["127.0.0.1:{exporter_port(config)}"]
""")
    server = subprocess.Popen(["prometheus", f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp_path}/tsdb",
                               f"--web.listen-address=127.0.0.1:{prom_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        query = f'gpusleuth_syscall_latency_seconds_bucket{{pid="{pid}",syscall="getppid"}}'
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": query})

        def scraped():
            try:
                data = json.loads(_get(url))
            except OSError:
                return None
            return data["data"]["result"] if data["status"] == "success" and data["data"]["result"] else None

        series = wait_for(scraped, timeout=60, interval=0.5)
        les = {s["metric"]["le"]: float(s["value"][1]) for s in series}
        assert les["+Inf"] > 0
        assert les["+Inf"] >= max(v for k, v in les.items())  # cumulative buckets
        q = f'histogram_quantile(0.5, gpusleuth_syscall_latency_seconds_bucket{{pid="{pid}",syscall="getppid"}})'
        p50 = json.loads(_get(f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": q})))
        value = float(p50["data"]["result"][0]["value"][1])
        assert 0 < value < 1e-3, value  # getppid takes well under a millisecond
    finally:
        server.terminate()
        server.wait(timeout=30)
