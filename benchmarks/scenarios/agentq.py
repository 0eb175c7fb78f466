"""What the runner asks the agent over its control socket: watched processes, finished requests, `explain`, the
evidence events, incidents (where the agent has them) and span senders' ranks."""
from __future__ import annotations

from typing import Any

from gpusleuth.agent.control.client import ControlClient, ControlError
from gpusleuth.agent.harness import wait_for

# Evidence kinds that can name a cause (both the current probes' and the diagnosis contract's), and incidents.
EVIDENCE_KINDS = ["runq_delay", "offcpu", "cgroup_throttle", "softirq", "slow_syscall", "direct_reclaim",
                  "net.microburst", "net.tcp_retransmit", "net.skb_drop", "gpu_throttle", "gpu_xid", "gpu_lost",
                  "incident"]


class AgentQuery:
    def __init__(self, client: ControlClient) -> None:
        self.client = client
        self.has_incidents: bool | None = None  # learnt on first use: the current agent has no `incidents`

    def wait_watched(self, pid: int, timeout_s: float = 60.0) -> None:
        """Until the agent watches `pid` (the engine is watched once its spans arrive)."""
        wait_for(lambda: pid in self.client.call("status").get("watched_pids", []), timeout=timeout_s,
                 interval=0.25)

    def requests(self, limit: int = 5000) -> list[dict[str, Any]]:
        return self.client.call("requests", limit=limit)

    def explain(self, request_id: str) -> dict[str, Any] | None:
        try:
            return self.client.call("explain", request_id=request_id)
        except ControlError as exc:
            if exc.code == "not_found":
                return None
            raise

    def events(self, start_ns: int, end_ns: int | None = None, kinds: list[str] | None = None,
               limit: int = 5000) -> list[dict[str, Any]]:
        return self.client.call("events", start_ns=start_ns, end_ns=end_ns, kinds=kinds or EVIDENCE_KINDS,
                                limit=limit)

    def incidents(self, since_ns: int) -> list[dict[str, Any]]:
        """Incidents since `since_ns` ([] where the agent has no such method)."""
        if self.has_incidents is False:
            return []
        try:
            out = self.client.call("incidents", since_ns=since_ns)
        except ControlError as exc:
            if exc.code not in ("unknown_method", "bad_params"):
                raise
            self.has_incidents = False
            return []
        self.has_incidents = True
        return out if isinstance(out, list) else out.get("incidents", [])

    def sender_ranks(self) -> dict[int, list[int]]:
        """Engine processes sending spans -> their ranks (from the spans snapshot)."""
        snap = self.client.call("snapshot", sources=["spans"]).get("spans") or {}
        return {int(pid): list(s.get("ranks", [])) for pid, s in (snap.get("senders") or {}).items()}
