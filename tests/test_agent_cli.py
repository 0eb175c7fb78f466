"""The agent as users run it: start/stop/status through the CLI, bad input, privileges, cleanup (root)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from gpusleuth.agent.harness import run_agent, wait_for, write_config
from tests.agent_helpers import agent_pid, bpf_prog_ids, prog_ids_of, spawn_python

pytestmark = pytest.mark.root


@pytest.fixture
def config():
    # world-traversable, so tests can also run the CLI as an unprivileged user against the same files
    tmp = Path(tempfile.mkdtemp(prefix="gpusleuth-test-"))
    os.chmod(tmp, 0o755)
    path = write_config(tmp, ["syscalls", "sched"])
    yield path
    run_agent("--config", str(path), "stop")
    shutil.rmtree(tmp, ignore_errors=True)


def test_start_twice_status_stop_and_nothing_left(config):
    first = run_agent("--config", str(config), "start")
    assert first.returncode == 0, first.stderr
    ours = prog_ids_of(agent_pid(config.parent))
    assert ours <= bpf_prog_ids()
    assert len(ours) >= 7  # 2 syscall programs + sched's wakeup, wakeup_new, switch, exit, newtask

    second = run_agent("--config", str(config), "start")
    assert second.returncode == 3
    assert f"already running (pid {agent_pid(config.parent)})" in second.stderr

    status = run_agent("--config", str(config), "status", "--json")
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["probes"]["syscalls"]["state"] == "ok"
    assert st["probes"]["sched"]["state"] == "ok"
    text = run_agent("--config", str(config), "status").stdout
    assert "syscalls  ok" in text and "recording:" in text

    stop = run_agent("--config", str(config), "stop")
    assert stop.returncode == 0, stop.stderr
    assert not (ours & bpf_prog_ids()), "BPF programs left loaded after stop"
    assert not (config.parent / "agent.sock").exists()


def test_stop_and_status_with_none_running(config):
    stop = run_agent("--config", str(config), "stop")
    assert stop.returncode == 3
    assert "no agent is running" in stop.stderr
    status = run_agent("--config", str(config), "status")
    assert status.returncode == 3
    assert "no agent is running" in status.stderr


@pytest.mark.parametrize("toml,key", [
    ("[store]\nmemory_cap_mb = 1\n", "store.memory_cap_mb"),
    ("[store]\nmemroy_cap_mb = 64\n", "store.memroy_cap_mb"),
    ("[recorder]\nflush_interval_s = \"5\"\n", "recorder.flush_interval_s"),
    ("[probes]\nenabled = [\"syscalls\", \"nosuch\"]\n", "probes.enabled[1]"),
    ("[probes.syscalls]\nslow_threshold_ms = -1\n", "probes.syscalls.slow_threshold_ms"),
    ("[exporter]\nlisten = \"9464\"\n", "exporter.listen"),
    ("[bogus]\nx = 1\n", "bogus"),
])
def test_bad_config_names_the_key(tmp_path, toml, key):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = run_agent("--config", str(path), "start", "--foreground")
    assert result.returncode == 2
    assert f"configuration error: {key}:" in result.stderr


def test_unknown_probe_on_the_command_line(config):
    result = run_agent("--config", str(config), "start", "--probes", "syscalls,warpdrive")
    assert result.returncode == 2
    assert "'warpdrive'" in result.stderr and "known probes" in result.stderr


def test_missing_config_file_named(tmp_path):
    result = run_agent("--config", str(tmp_path / "nope.toml"), "status")
    assert result.returncode == 2
    assert "nope.toml does not exist" in result.stderr


def test_unprivileged_user_is_refused(config):
    result = run_agent("--config", str(config), "start", user="nobody")
    assert result.returncode == 4
    assert "needs root" in result.stderr


def test_unprivileged_client_cannot_use_control_socket(config):
    assert run_agent("--config", str(config), "start").returncode == 0
    result = run_agent("--config", str(config), "status", user="nobody")
    assert result.returncode == 4
    assert "permission denied" in result.stderr
    sock = config.parent / "agent.sock"
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
    # Even if the file mode is loosened by hand, the agent checks the peer's credentials itself.
    os.chmod(sock, 0o666)
    result = run_agent("--config", str(config), "status", user="nobody")
    assert result.returncode == 4
    assert "may not use the agent's control socket" in result.stderr


SLOW_WRITER = """
import os, sys, time
sys.stdin.readline()
while True:
    t0 = time.monotonic_ns()
    time.sleep(0.05)
    print(t0, flush=True)
"""


def test_kill9_then_start_recovers_and_keeps_segments(config):
    tmp = config.parent
    config.write_text(config.read_text().replace("[probes.syscalls]", "") +
                      "\n[probes.syscalls]\nslow_threshold_ms = 20.0\n")
    worker = spawn_python(SLOW_WRITER)
    try:
        assert run_agent("--config", str(config), "start").returncode == 0
        first_pid = agent_pid(tmp)
        sock = __import__("gpusleuth.agent.control.client", fromlist=["ControlClient"]).ControlClient(str(tmp / "agent.sock"))
        sock.call("watch", pids=[worker.pid])
        sock.close()
        worker.stdin.write("go\n")
        worker.stdin.flush()
        time.sleep(4.5)
        os.kill(first_pid, signal.SIGKILL)
        killed_at = time.monotonic_ns()
        wait_for(lambda: not os.path.exists(f"/proc/{first_pid}"))

        restart = run_agent("--config", str(config), "start")
        assert restart.returncode == 0, restart.stderr
        assert agent_pid(tmp) != first_pid
        assert "stale pid file left by pid" in (tmp / "agent.log").read_text()
        assert run_agent("--config", str(config), "stop").returncode == 0
    finally:
        worker.kill()
        worker.wait()
    events = pd.read_parquet(tmp / "rec" / "events")
    ours = events[(events.kind == "slow_syscall") & (events.pid == worker.pid)]
    before_kill = ours[ours.end_ns < killed_at]
    assert len(before_kill) > 0
    # flush interval is 1 s: nothing that ended more than ~1 s (+ one poll) before the kill is missing
    assert before_kill.end_ns.max() >= killed_at - 2_000_000_000
    assert not [p for p in (tmp / "rec").rglob(".*.tmp")], "a half-written file was left visible"


def test_probes_lists_needs_and_prints_bpf_source(config):
    listing = run_agent("--config", str(config), "probes", "--json")
    assert listing.returncode == 0, listing.stderr
    probes = json.loads(listing.stdout)
    assert probes["syscalls"]["ready"] is True
    assert {r["name"] for r in probes["syscalls"]["requirements"]} >= {"privileges", "bcc", "kernel headers"}
    text = run_agent("--config", str(config), "probes").stdout
    assert "syscalls (enabled): ready" in text
    source = run_agent("--config", str(config), "probes", "--ebpf", "syscalls")
    assert source.returncode == 0 and "TRACEPOINT_PROBE(raw_syscalls, sys_enter)" in source.stdout
    assert "#define SLOW_NS 10000000" in source.stdout
    bad = run_agent("--config", str(config), "probes", "--ebpf", "nosuch")
    assert bad.returncode == 2 and "unknown probe" in bad.stderr


def test_help_has_examples():
    for cmd in ("start", "stop", "status", "probes", "demo"):
        out = run_agent(cmd, "--help")
        assert out.returncode == 0
        assert "examples:" in out.stdout and "agent " + cmd in out.stdout
