"""The cuda probe inside the real agent (root, eBPF) and through `agent probes cuda`, against the fake CUDA
libraries (probes/cuda/fake_cuda.c: a hardware-boundary fake, CI has no GPU): enabled by config, it attaches to a
watched process, its snapshot crosses the control socket typed and its series reach /metrics; the CLI lists the
libraries and symbols of a process and traces its launches."""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from gpusleuth.agent.control.client import ControlClient
from gpusleuth.agent.harness import AGENT, free_port, run_agent, wait_for, write_config
from gpusleuth.probes import snapshot_codec
from gpusleuth.probes.cuda import fakelib

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    return fakelib.build(tmp_path_factory.mktemp("fakecuda"))


def _launches(sock: str, pid: int) -> int:
    with ControlClient(sock) as client:
        data = client.call("snapshot", sources=["cuda"])["cuda"]
    snap = snapshot_codec.decode("cuda", data)
    return snap.processes[pid].launches if pid in snap.processes else -1


def test_agent_runs_the_cuda_probe_on_a_watched_process(fake_dir):
    tmp = Path(tempfile.mkdtemp(prefix="gpusleuth-cuda-"))
    port = free_port()
    with fakelib.FakeCudaProcess(fake_dir) as fake:
        config = write_config(tmp, ["cuda"], listen=f"127.0.0.1:{port}",
                              watch=f"comms = []\npids = [{fake.pid}]\nrescan_interval_s = 0.5",
                              extra="\n[probes.cuda]\ninterval_s = 0.2\nrescan_interval_s = 0.2\n")
        try:
            started = run_agent("--config", str(config), "start")
            assert started.returncode == 0, started.stderr
            sock = str(tmp / "agent.sock")
            wait_for(lambda: _launches(sock, fake.pid) == 0, timeout=30)  # attached, nothing launched yet
            fake.loop("app_launch_loop", 123)
            wait_for(lambda: _launches(sock, fake.pid) == 123, timeout=10)
            with ControlClient(sock) as client:
                status = client.call("status")["probes"]["cuda"]
            assert status["state"] == "ok" and "uprobe_multi links per process (1 attached" in status["path"], status
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            assert f'gpusleuth_cuda_kernel_launches_total{{comm="python",pid="{fake.pid}"}} 123.0' in text
        finally:
            run_agent("--config", str(config), "stop")
            shutil.rmtree(tmp, ignore_errors=True)


def test_agent_probes_cuda_lists_libraries_and_symbols(fake_dir):
    with fakelib.FakeCudaProcess(fake_dir) as fake:
        out = run_agent("probes", "cuda", "--json", "--pid", str(fake.pid))
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)[str(fake.pid)]
    assert found["api"] == "driver+runtime"
    assert found["libraries"]["driver"]["path"] == str(fake_dir / "libcuda.so.1")
    assert "cuMemcpyHtoD_v2_ptds" in found["libraries"]["driver"]["symbols"]
    assert "ncclAlltoAll" in found["libraries"]["nccl"]["missing"]


def test_agent_probes_cuda_launches_traces_each_launch(fake_dir):
    with fakelib.FakeCudaProcess(fake_dir) as fake:
        tracer = subprocess.Popen([AGENT, "probes", "cuda", "--launches", "--seconds", "3", "--json", "--pid",
                                   str(fake.pid)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while tracer.poll() is None:  # launch until the tracer is done: some of them fall in its window
            fake.loop("app_launch_ex_loop", 2)
            time.sleep(0.05)
        out, err = tracer.communicate()
    assert tracer.returncode == 0, err
    events = json.loads(out)
    assert events and {e["pid"] for e in events} == {fake.pid}
    assert all(e["attrs"]["grid"] == [8, 4, 2] and e["attrs"]["shared_mem"] == 1024 for e in events)
