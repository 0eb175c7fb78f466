"""`agent mcp`: a Model Context Protocol server on stdio, so an assistant can ask the running agent what the on-call
engineer would: its status, open incidents, the slowest requests, why one was slow, a runbook's checks, recent
events. Read-only: every tool is a read of the control socket (`agent/control/client.py`) and nothing else, so the
socket's own rule applies: a caller it refuses (not root, not in control.group) gets that refusal as the tool's
error, and so does a call while no agent runs. Built on the `mcp` package (pip install 'gpusleuth[mcp]').

Register it with an assistant as a stdio server: command `sudo agent mcp` (or `agent --config PATH mcp`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

from gpusleuth.agent.control.client import AgentNotRunning, ControlClient, ControlError, socket_path

MAX_EVENTS = 1000  # one events call returns at most this many (the newest)
MAX_WINDOW_S = 3600.0
EXIT_USAGE = 2


class ReadOnlyAgent:
    """The control methods the tools may call, each a fresh connection (an assistant's calls are minutes apart)."""

    METHODS = frozenset({"status", "incidents", "diagnoses", "explain", "events", "requests", "snapshot"})

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def call(self, method: str, **params: Any) -> Any:
        assert method in self.METHODS, f"{method} is not a read-only control method"
        with ControlClient(self.socket) as client:
            return client.call(method, **params)


def _since(agent: ReadOnlyAgent, window_s: float | None) -> int | None:
    """The agent's clock (CLOCK_MONOTONIC of this host) `window_s` ago."""
    if window_s is None:
        return None
    return time.monotonic_ns() - int(min(float(window_s), MAX_WINDOW_S) * 1e9)


def tools(agent: ReadOnlyAgent) -> dict[str, Callable[..., Any]]:
    """The tool functions by name (their docstrings are what the assistant reads)."""

    def status() -> dict[str, Any]:
        """The agent's state: each probe (ok / degraded / unavailable, and why), the watched processes, uptime."""
        s = agent.call("status")
        return {"uptime_s": s.get("uptime_s"), "watched_pids": s.get("watched_pids"),
                "probes": {n: {"state": p.get("state"), "reason": p.get("reason"), "path": p.get("path")}
                           for n, p in (s.get("probes") or {}).items()},
                "config_source": s.get("config_source"), "exporter": s.get("exporter")}

    def incidents(is_open: bool | None = None, window_s: float | None = None) -> list[dict[str, Any]]:
        """Incidents the diagnosis opened (cause, culprit process, evidence, runbook): only open ones with
        is_open=true; only those lasting into the last window_s seconds when given."""
        return agent.call("incidents", since_ns=_since(agent, window_s), is_open=is_open)

    def slow_requests(count: int = 10, window_s: float | None = None, min_excess_ms: float = 0.0) -> list[dict]:
        """The finished requests with the most latency beyond their engine's normal (excess), each with its top
        cause: at most `count` (<= 100), within the last window_s seconds when given."""
        return agent.call("diagnoses", since_ns=_since(agent, window_s), slowest=max(1, min(int(count), 100)),
                          min_excess_ms=float(min_excess_ms))

    def explain(request_id: str) -> dict[str, Any]:
        """Why one request was slow: its phases, the latency budget part by part against the engine's normal,
        the verdicts that split the excess (cause, culprit pid/tid/comm, evidence, runbook) and what stays
        unexplained."""
        return agent.call("explain", request_id=str(request_id))

    def recent_requests(limit: int = 50) -> list[dict[str, Any]]:
        """The most recent finished requests (newest last), with their phase durations: at most `limit` (<= 500)."""
        return agent.call("requests", limit=max(1, min(int(limit), 500)))

    def events(kinds: list[str] | None = None, pid: int | None = None, window_s: float = 60.0,
               limit: int = 200) -> dict[str, Any]:
        """Host events of the last window_s seconds (<= 3600): slow syscalls, run-queue waits, off-CPU states,
        GPU XIDs, NVTX ranges, incidents...; filtered by kinds and pid; at most `limit` (<= 1000), newest kept."""
        limit = max(1, min(int(limit), MAX_EVENTS))
        got = agent.call("events", start_ns=_since(agent, window_s), kinds=kinds, pid=pid, limit=limit)
        return {"events": got[-limit:], "count": len(got), "limit": limit}

    def run_runbook(name: str) -> dict[str, Any]:
        """Run a runbook's checks against the live agent (read-only queries) and return each figure, whether it
        confirms the fault and the next step. Names are the runbook files' stems, e.g. cpu-contention."""
        from gpusleuth.agent.cli.runbook import LiveSources, vocabulary  # noqa: PLC0415
        from gpusleuth.runbooks.book import load_all  # noqa: PLC0415
        from gpusleuth.runbooks.checks import run  # noqa: PLC0415

        books = {b.id: b for b in load_all(vocabulary())}
        if name not in books:
            raise LookupError(f"no runbook {name!r}; known: {', '.join(sorted(books))}")
        book = books[name]
        return {"runbook": book.id, "title": book.title, "path": str(book.path),
                "checks": [r.to_dict() for r in run(book, LiveSources(agent.socket, None))]}

    return {f.__name__: f for f in (status, incidents, slow_requests, explain, recent_requests, events, run_runbook)}


def build_server(agent: ReadOnlyAgent):
    """The MCP server with every tool; a control-socket refusal or error becomes the tool's error text."""
    from mcp.server import MCPServer  # noqa: PLC0415 - optional dependency
    from mcp.server.mcpserver.exceptions import ToolError  # noqa: PLC0415
    from mcp.types import ToolAnnotations  # noqa: PLC0415

    server = MCPServer("gpusleuth", instructions="Read-only access to the gpusleuth agent on this GPU host: why "
                       "was an inference request slow, what is wrong now. Start with status and incidents.")
    for name, fn in tools(agent).items():
        server.tool(name=name, annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))(
            _refusing(fn, ToolError))
    return server


def _refusing(fn: Callable[..., Any], tool_error: type) -> Callable[..., Any]:
    import functools  # noqa: PLC0415

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return json.loads(json.dumps(fn(*args, **kwargs), default=str))
        except (AgentNotRunning, ControlError) as exc:  # includes permission denied: the socket's own answer
            raise tool_error(str(exc)) from None
        except (LookupError, ValueError) as exc:
            raise tool_error(str(exc)) from None
    return call


def add_subcommand(add: Callable[[str, str], argparse.ArgumentParser], commands: dict[str, Callable]) -> None:
    """Register `agent mcp` on the main parser and in its command table."""
    p = add("mcp", "an MCP server on stdio for assistants: status, incidents, slow requests, explain, runbooks")
    p.epilog = "examples:\n  sudo agent mcp                 # as an assistant's stdio server command"
    p.add_argument("--socket", help="control socket (default: from the config)")
    commands["mcp"] = main


def main(args: argparse.Namespace) -> int:
    """Serve MCP on stdin/stdout until the client closes it."""
    try:
        import mcp  # noqa: F401, PLC0415 - the optional dependency, checked before anything is served
    except ImportError:
        print("agent mcp: the mcp package is not installed: pip install 'gpusleuth[mcp]'", file=sys.stderr)
        return EXIT_USAGE
    path = args.socket or socket_path(getattr(args, "config", None))
    build_server(ReadOnlyAgent(path)).run("stdio")
    return 0
