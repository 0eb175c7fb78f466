"""Names you can tell apart (diagnosis contract §1): the agent daemon is `gs-agent` and the TUI `gs-tui` in /proc,
and the default watch list covers our own `gs-*` processes. (The engine's names: test_engine_served_spans.py and,
for a TP worker rank, test_engine_cli.py; the load generator's: test_engine_served_spans.py.)
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gpusleuth.agent.config import WatchSection
from gpusleuth.agent.harness import run_agent, wait_for, write_config
from gpusleuth.probes import procname
from tests.agent_helpers import agent_pid


def _comm(pid: int | str) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_set_thread_name_names_only_the_calling_thread():
    code = """
import threading
from gpusleuth.probes import procname
def named():
    procname.set_thread_name("gs-test-thread-too-long")
    print(open(f"/proc/self/task/{threading.get_native_id()}/comm").read().strip())
t = threading.Thread(target=named); t.start(); t.join()
print(open("/proc/self/comm").read().strip())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["gs-test-thread-", "python"]  # cut to 15 bytes; the main thread (the process) keeps its name


def test_tui_names_itself():
    code = ("from gpusleuth.agent.cli.tui import main; main(['--recording', '/nonexistent-recording']); "
            "print(open('/proc/self/comm').read().strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == procname.TUI, out.stderr


def test_default_watch_covers_our_processes():
    import fnmatch

    comms = WatchSection().comms
    for name in ("gs-engine", "gs-engine-r3", "gs-step", "gs-load", "gs-tui"):
        assert any(fnmatch.fnmatchcase(name, pattern) for pattern in comms), name


@pytest.mark.root
def test_agent_daemon_is_gs_agent():
    tmp = Path(tempfile.mkdtemp(prefix="gpusleuth-names-"))
    config = write_config(tmp, ["spans"], extra=f'\n[probes.spans]\nsocket = "{tmp}/spans.sock"\n')
    try:
        started = run_agent("--config", str(config), "start")
        assert started.returncode == 0, started.stderr
        pid = wait_for(lambda: agent_pid(tmp))
        assert _comm(pid) == procname.AGENT
        threads = {_comm(f"{pid}/task/{t.name}") for t in Path(f"/proc/{pid}/task").iterdir()}
        # its threads start after the rename and inherit it (libraries that name their own, such as jemalloc's
        # background thread, aside)
        assert procname.AGENT in threads and not threads & {"agent", "python", "python3"}, threads
    finally:
        run_agent("--config", str(config), "stop")
        shutil.rmtree(tmp, ignore_errors=True)
