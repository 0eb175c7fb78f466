"""Resolves which processes the per-process probes watch: pids, comm patterns, cgroups and span senders."""
from __future__ import annotations

import fnmatch
import logging
import os
import re
import threading
import time
from collections import deque

from gpusleuth.agent.config import WatchSection
from gpusleuth.probes.base import WatchSet
from gpusleuth.probes.kernel.proc_info import all_pids, cgroup_id, comm_of, is_alive

log = logging.getLogger(__name__)


class Watcher:
    """Recomputes the WatchSet on each `resolve()`; span senders are added as they appear."""

    def __init__(self, config: WatchSection) -> None:
        self.config = config
        self._comm_re = re.compile("|".join(fnmatch.translate(p) for p in config.comms)) if config.comms else None
        self._span_pids: set[int] = set()
        self._extra_pids: set[int] = set()
        self._lock = threading.Lock()
        self._cgroup_ids = self._resolve_cgroups()
        self._by_comm: set[int] = set()  # processes watched only because their comm matched, at the last resolve
        self.changes: deque[dict] = deque(maxlen=100)  # execs of watched processes, newest last (agent status)

    def _resolve_cgroups(self) -> frozenset[int]:
        ids = set()
        for path in self.config.cgroups:
            try:
                ids.add(cgroup_id(path))
            except OSError as exc:
                log.warning("watch.cgroups: cannot stat %s (%s); ignoring it", path, exc.strerror)
        return frozenset(ids)

    def add_span_sender(self, pid: int) -> bool:
        """Watch a process that sent engine spans; True if it was new."""
        if not self.config.include_span_senders:
            return False
        with self._lock:
            if pid in self._span_pids:
                return False
            self._span_pids.add(pid)
            return True

    def add_pids(self, pids: set[int]) -> None:
        """Watch more pids at run time (control socket `watch` request)."""
        with self._lock:
            self._extra_pids |= pids

    def note_exec(self, pid: int, comm: str, old_comm: str = "") -> dict | None:
        """A watched process exec'd into `comm` (the probes saw it in the kernel): re-evaluate the comm rules for it.
        One watched by its comm alone that no longer matches leaves the watch at the next resolve; the change is
        kept in `changes` and logged either way. Returns the change (None if already noted)."""
        with self._lock:
            if any(c["pid"] == pid and c["comm"] == comm for c in list(self.changes)[-20:]):
                return None  # each kernel probe reports the same exec
            by_comm = pid in self._by_comm
        matches = self._comm_re is not None and bool(self._comm_re.match(comm))
        is_kept = not by_comm or matches or self.config.is_all
        change = {"pid": pid, "old_comm": old_comm, "comm": comm, "t": time.time(),
                  "watch": "kept" if is_kept else "dropped: no watch.comms pattern matches the new name"}
        with self._lock:
            self.changes.append(change)
        log.info("watch: pid %d exec'd %s-> %s; %s", pid, f"from {old_comm} " if old_comm else "", comm,
                 change["watch"])
        return change

    def resolve(self) -> WatchSet:
        with self._lock:
            self._span_pids = {p for p in self._span_pids if is_alive(p)}
            self._extra_pids = {p for p in self._extra_pids if is_alive(p)}
            tgids = {p for p in self.config.pids if is_alive(p)} | self._span_pids | self._extra_pids
        by_comm = set()
        if self._comm_re is not None and not self.config.is_all:
            for pid in all_pids():
                name = comm_of(pid)
                if name and self._comm_re.match(name) and pid not in tgids:
                    by_comm.add(pid)
            tgids |= by_comm
        with self._lock:
            self._by_comm = by_comm
        tgids.discard(os.getpid())  # never watch the agent itself: its own polling would feed back into the data
        return WatchSet(tgids=frozenset(tgids), cgroup_ids=self._cgroup_ids, is_all=self.config.is_all,
                        is_inherited=self.config.inherit_children)
