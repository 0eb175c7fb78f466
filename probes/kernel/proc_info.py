"""Process facts shared by probes and the agent: comm names, liveness, threads, cgroup ids, page-fault counts.

psutil gives the process list. Three readers stay on /proc because psutil answers a different question:
the comm comes from /proc/PID/comm (psutil's name() expands a 15-character comm from the command line, so it would
not match the comm BPF programs report), and thread ids from listing /proc/PID/task (psutil's threads() also reads
every thread's CPU times, work the sched probe does not need when it registers a process's threads), and liveness
from /proc/ID, which holds for thread ids too (psutil.pid_exists is False for a thread).
"""
from __future__ import annotations

import os
from pathlib import Path

import psutil

EXITED_COMM = "<exited>"  # the comm of a process that was gone before its name could be read


def comm_of(pid: int) -> str:
    """The process's comm, or '' if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def is_alive(pid: int) -> bool:
    """True for a live process or thread id (psutil.pid_exists says False for thread ids)."""
    return os.path.exists(f"/proc/{pid}")


def threads_of(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def tgid_of(tid: int) -> int:
    """The process of a thread id (0 if it is gone), from /proc/TID/status."""
    try:
        for line in Path(f"/proc/{tid}/status").read_text().splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def fault_counts(pid: int) -> tuple[int, int] | None:
    """(minor, major) page faults of a process so far, from /proc/PID/stat (None if it is gone): the one place the
    kernel splits major from minor, which psutil (7.2) does not expose."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[7]), int(fields[9])  # minflt, majflt: fields 10 and 12 of proc(5), counted after comm


def all_pids() -> list[int]:
    return psutil.pids()


def cgroup_id(path: str) -> int:
    """cgroup v2 id (what bpf_get_current_cgroup_id returns) = the inode of the cgroup directory."""
    return os.stat(path).st_ino


class CommCache:
    """pid -> comm, remembered so a process that exited between a kernel event and its read still has a name."""

    def __init__(self, max_entries: int = 65536) -> None:
        self._names: dict[int, str] = {}
        self._max = max_entries

    def get(self, pid: int, fallback: str = "") -> str:
        name = self._names.get(pid)
        if name is None:
            name = comm_of(pid) or fallback
            if name:
                if len(self._names) >= self._max:
                    self._names.clear()
                self._names[pid] = name
        return name or fallback

    def peek(self, pid: int) -> str:
        """The remembered name ('' if none), without reading /proc."""
        return self._names.get(pid, "")

    def put(self, pid: int, name: str) -> None:
        """Remember `name` (the kernel told it: a fork, an exec, an exit)."""
        if len(self._names) >= self._max and pid not in self._names:
            self._names.clear()
        self._names[pid] = name

    def forget(self, pid: int) -> None:
        self._names.pop(pid, None)
