"""Run a real agent from scripts (tests, benchmarks): a temporary config, the `agent` command, waiting on a condition.

Nothing here is used by the agent itself; it lives in the package so benchmarks need not import tests/.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

# The `agent` command of the interpreter running this code (a virtual environment's bin/).
AGENT = str(Path(sys.executable).parent / "agent")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp: Path, probes: list[str] | None, extra: str = "", flush_s: float | None = 1.0,
                 listen: str = "", watch: str | None = "comms = []\nrescan_interval_s = 0.5") -> Path:
    """A config whose every path is under `tmp`; the exporter listens on `listen` or a free port. `probes`,
    `flush_s` or `watch` (the body of [watch]) left None keep the agent's defaults."""
    text = f"""
[agent]
pid_file = "{tmp}/agent.pid"
log_file = "{tmp}/agent.log"
[control]
socket = "{tmp}/agent.sock"
[recorder]
directory = "{tmp}/rec"
{"" if flush_s is None else f"flush_interval_s = {flush_s}"}
[exporter]
listen = "{listen or f'127.0.0.1:{free_port()}'}"
"""
    if watch is not None:
        text += f"[watch]\n{watch}\n"
    if probes is not None:
        text += f"[probes]\nenabled = {probes!r}\n".replace("'", '"')
    text += _net_state(tmp, probes, extra)
    path = tmp / "agent.toml"
    path.write_text(text)
    return path


def _net_state(tmp: Path, probes: list[str] | None, extra: str) -> str:
    """Give each scripted agent its own tc ownership record, so concurrent agents never contend for filters."""
    if (probes is not None and "net" not in probes) or "state_dir" in extra:
        return extra
    line = f'state_dir = "{tmp}/state"'
    if "[probes.net]" in extra:
        return extra.replace("[probes.net]", f"[probes.net]\n{line}", 1)
    return f"\n[probes.net]\n{line}\n" + extra


def run_agent(*args: str, timeout: float = 120, user: str | None = None) -> subprocess.CompletedProcess:
    """`agent ARGS...` to completion, output captured; as `user` (via setpriv, group nogroup) when given."""
    cmd = [AGENT, *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1) -> T:
    """The first truthy value of `predicate()`, polled every `interval` s; AssertionError after `timeout` s
    (an assertion, so a test reports it as a failed check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
