"""The agent's own health snapshot (`store.snapshot("agent")`), refreshed every second by the supervisor.

A TypedDict rather than a dataclass: `Agent.status()` (and so the `status` control method and `agent status`)
extends it with its own keys, and every part is already plain data for the control socket.
"""
from __future__ import annotations

from typing import Any, TypedDict

from gpusleuth.agent.probe_runner import ProbeHealth
from gpusleuth.agent.store import StoreStats


class AgentHealth(TypedDict):
    pid: int
    uptime_s: float
    probes: dict[str, ProbeHealth]  # in the order they were enabled
    store: StoreStats
    recorder: dict[str, Any] | None  # agent/recorder.py Recorder.status(); None when recording is off
    rss_bytes: int
