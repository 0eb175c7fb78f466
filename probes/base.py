"""The probe contract: start / poll / stop / status, plus what a probe needs from the host.

A probe is a library object. The agent runs each started probe's `poll` in its own thread every
`config.interval_s`, puts the returned Samples and Events in its store, and keeps the returned snapshot (a slots
dataclass defined in the probe's own snapshot.py, e.g. probes/gpu/snapshot.py) as the probe's latest state for
exporters, the control socket and the TUI. Nothing on a scrape or render path calls into the probe.
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gpusleuth.probes.records import Event, Sample


class ProbeState(str, enum.Enum):
    OK = "ok"
    DEGRADED = "degraded"
    UNAVAILABLE = "unavailable"
    STOPPED = "stopped"


@dataclass(slots=True)
class ProbeStatus:
    """What `agent status` prints per probe: state, why, and which implementation path was taken."""

    state: ProbeState
    reason: str = ""
    path: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state.value, "reason": self.reason, "path": self.path, "details": self.details}


@dataclass(slots=True)
class Requirement:
    """One thing a probe needs from the host (`agent probes` lists these), whether it is met, and how to fix it."""

    name: str
    is_met: bool
    detail: str = ""
    how_to_fix: str = ""
    is_optional: bool = False  # unmet: the probe runs without the part that needs it (degraded)


@dataclass(slots=True)
class PollResult:
    """What one poll produced: records for the store and the latest aggregated state."""

    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # The probe's snapshot type (its room's snapshot.py); a new object each poll, never changed once returned.
    snapshot: Any = None


class ProbeUnavailable(Exception):
    """Raised by `start` when this host cannot run the probe; the message says why and how to fix it."""


@dataclass(slots=True, frozen=True)
class WatchSet:
    """The processes probes should look at (resolved by the agent from pids, comm patterns, cgroups, spans).

    `is_all` means no filter: every process is watched (costlier on busy hosts).
    """

    tgids: frozenset[int] = frozenset()
    cgroup_ids: frozenset[int] = frozenset()
    is_all: bool = False
    is_inherited: bool = True  # children of watched processes are watched from their fork (in the kernel)


class Probe(ABC):
    """Base class of every data source. Subclasses set `name` and `config_class` (a slots dataclass with defaults
    for every field and an `interval_s` field, validated in `__post_init__` by raising agent.config.ConfigError)."""

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None:
        self.config = config
        self._status = ProbeStatus(ProbeState.STOPPED, "not started")

    @classmethod
    @abstractmethod
    def requirements(cls) -> list[Requirement]:
        """What this probe needs from the host, each checked now."""

    @abstractmethod
    def start(self) -> None:
        """Attach to the host; raise ProbeUnavailable with a reason if it cannot."""

    @abstractmethod
    def poll(self, now_ns: int) -> PollResult:
        """Read (and clear) what accumulated since the last poll."""

    @abstractmethod
    def stop(self) -> None:
        """Detach everything this probe attached. Safe to call twice or after a failed start."""

    def status(self) -> ProbeStatus:
        return self._status

    def set_status(self, state: ProbeState, reason: str = "", path: str = "", **details: Any) -> None:
        self._status = ProbeStatus(state, reason, path or self._status.path, dict(details))

    def update_watch(self, watch: WatchSet) -> None:
        """Called by the agent whenever the watched set changes. Probes that filter by process override this."""
