"""Processes followed through fork, exec and exit (probes/bpf/lifecycle.h), real eBPF against workloads whose
syscall counts are known: an exec keeps the process's counts and renames it; the short-lived children of a watched
parent are counted from their first syscall, exactly, under their own comm, and fold into their comm's `exited`
totals once gone."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from gpusleuth.probes.base import WatchSet
from gpusleuth.probes.bpf.lifecycle import PROC_EXEC
from gpusleuth.probes.kernel.syscalls import SyscallConfig, SyscallProbe
from gpusleuth.probes.records import monotonic_ns

pytestmark = pytest.mark.root

# Counts getppid exactly: the interpreter itself never calls it.
LOOP = "import os, sys\nfor _ in range(int(sys.argv[1])): os.getppid()\n"


@pytest.fixture
def renamed_python(tmp_path):
    """The interpreter under another name: a process that execs it gets that comm."""
    def make(name: str) -> str:
        link = tmp_path / name
        link.symlink_to(os.path.realpath(sys.executable))
        return str(link)
    return make


def _probe(pid: int) -> SyscallProbe:
    probe = SyscallProbe(SyscallConfig(interval_s=0.1))
    probe.update_watch(WatchSet(tgids=frozenset({pid})))
    probe.start()
    probe.poll(monotonic_ns())
    return probe


def test_exec_keeps_the_counts_and_updates_the_comm(renamed_python, tmp_path):
    target = renamed_python("gs-after-exec")
    (tmp_path / "loop.py").write_text(LOOP)
    code = (f"import os, sys\nsys.stdin.readline()\nfor _ in range(1000): os.getppid()\n"
            f"os.execv({target!r}, [{target!r}, {str(tmp_path / 'loop.py')!r}, '2000'])\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, text=True)
    probe = _probe(child.pid)
    try:
        before = probe.poll(monotonic_ns()).snapshot.processes.get(child.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        child.wait(timeout=30)
        snap = probe.poll(monotonic_ns()).snapshot  # gone at this poll: still published under its pid once
        changes = probe.take_changes()
    finally:
        probe.stop()
    assert before is None or before.comm.startswith("python")
    proc = snap.processes[child.pid]
    assert proc.syscalls["getppid"].count == 3000  # 1000 before the exec + 2000 after, one process throughout
    assert proc.comm == "gs-after-exec"
    assert any(c.tgid == child.pid and c.kinds & PROC_EXEC and c.comm == "gs-after-exec" for c in changes)


def test_short_lived_children_of_a_watched_parent_are_counted_exactly_with_their_comm(renamed_python, tmp_path):
    target = renamed_python("gs-child")
    (tmp_path / "loop.py").write_text(LOOP)
    counts = [300 + 17 * i for i in range(20)]
    code = (f"import subprocess, sys\nsys.stdin.readline()\n"
            f"for n in {counts!r}:\n"
            f"    p = subprocess.Popen([{target!r}, {str(tmp_path / 'loop.py')!r}, str(n)])\n"
            f"    p.wait()\n    print(p.pid, n, flush=True)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    probe = _probe(parent.pid)
    seen: dict[int, tuple[int, str]] = {}
    try:
        parent.stdin.write("go\n")
        parent.stdin.flush()
        deadline = time.monotonic() + 60
        while parent.poll() is None and time.monotonic() < deadline:
            for pid, proc in probe.poll(monotonic_ns()).snapshot.processes.items():
                if "getppid" in proc.syscalls:
                    seen[pid] = (proc.syscalls["getppid"].count, proc.comm)
            time.sleep(0.02)
        out, _ = parent.communicate(timeout=30)
        time.sleep(0.3)
        for _ in range(3):  # the last children's final poll, then their fold
            snap = probe.poll(monotonic_ns()).snapshot
            for pid, proc in snap.processes.items():
                if "getppid" in proc.syscalls:
                    seen[pid] = (proc.syscalls["getppid"].count, proc.comm)
    finally:
        probe.stop()
    children = {int(pid): int(n) for pid, n in (line.split() for line in out.splitlines())}
    assert len(children) == 20
    got = {pid: seen.get(pid) for pid in children}
    assert got == {pid: (n, "gs-child") for pid, n in children.items()}, got
    assert snap.exited["gs-child"].syscalls["getppid"].count == sum(counts)
    assert not set(children) & set(snap.processes)  # gone processes leave their per-pid histograms


def test_a_process_watched_by_comm_that_execs_into_another_name_is_dropped_and_reported(renamed_python, tmp_path):
    from gpusleuth.agent.config import WatchSection
    from gpusleuth.agent.watch import Watcher
    before, after = renamed_python("gs-wtest-a"), renamed_python("other-name")
    code = f"import os, sys\nsys.stdin.readline()\nos.execv({after!r}, [{after!r}, '-c', 'import time; time.sleep(60)'])"
    proc = subprocess.Popen([before, "-c", code], stdin=subprocess.PIPE, text=True)
    pinned = subprocess.Popen([before, "-c", code], stdin=subprocess.PIPE, text=True)
    watcher = Watcher(WatchSection(comms=["gs-wtest*"], pids=[pinned.pid]))
    try:
        time.sleep(0.3)
        assert {proc.pid, pinned.pid} <= watcher.resolve().tgids
        for p in (proc, pinned):
            p.stdin.write("go\n")
            p.stdin.flush()
        time.sleep(0.5)
        dropped = watcher.note_exec(proc.pid, "other-name", "gs-wtest-a")
        kept = watcher.note_exec(pinned.pid, "other-name", "gs-wtest-a")
        assert watcher.note_exec(proc.pid, "other-name") is None  # the second probe's report of the same exec
        watch = watcher.resolve()
    finally:
        for p in (proc, pinned):
            p.kill()
            p.wait()
    assert dropped["watch"].startswith("dropped") and kept["watch"] == "kept"
    assert proc.pid not in watch.tgids and pinned.pid in watch.tgids
    assert [c["pid"] for c in watcher.changes] == [proc.pid, pinned.pid]
