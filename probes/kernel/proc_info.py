"""Small /proc readers shared by probes and the agent (comm names, liveness, threads, cgroup ids)."""
from __future__ import annotations

import os
from pathlib import Path


def comm_of(pid: int) -> str:
    """The process's comm, or '' if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def is_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def threads_of(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


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

    def forget(self, pid: int) -> None:
        self._names.pop(pid, None)
