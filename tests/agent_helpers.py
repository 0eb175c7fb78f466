"""Helpers for tests that run the real agent: temp configs, CLI invocation, free ports, workloads."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
AGENT = str(VENV_BIN / "agent")


def free_port() -> int:
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
    """Give each test agent its own tc ownership record, so concurrent test agents never contend for filters."""
    if (probes is not None and "net" not in probes) or "state_dir" in extra:
        return extra
    line = f'state_dir = "{tmp}/state"'
    if "[probes.net]" in extra:
        return extra.replace("[probes.net]", f"[probes.net]\n{line}", 1)
    return f"\n[probes.net]\n{line}\n" + extra


def exporter_port(config: Path) -> int:
    for line in config.read_text().splitlines():
        if line.startswith("listen"):
            return int(line.split(":")[-1].strip('" '))
    raise AssertionError("no listen line")


def run_agent(*args: str, timeout: float = 120, user: str | None = None) -> subprocess.CompletedProcess:
    cmd = [AGENT, *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def agent_pid(tmp: Path) -> int | None:
    try:
        text = (tmp / "agent.pid").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def bpf_prog_ids() -> set[int]:
    """Ids of every BPF program loaded in the kernel (bpftool)."""
    import json
    out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True, check=True).stdout
    return {p["id"] for p in json.loads(out or "[]")}


def prog_ids_of(pid: int) -> set[int]:
    """Ids of the BPF programs a process holds open (from /proc/PID/fdinfo)."""
    ids = set()
    fdinfo = Path(f"/proc/{pid}/fdinfo")
    for entry in fdinfo.iterdir():
        try:
            text = entry.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return ids


def spawn_python(code: str, **kw) -> subprocess.Popen:
    """A Python child running `code`, stdin/stdout pipes for step-by-step control."""
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, **kw)
