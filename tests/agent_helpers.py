"""Helpers only the tests use for a real agent: its exporter port, pid, BPF programs, child workloads.

Temp configs, the `agent` command and waiting live in gpusleuth.agent.harness (benchmarks use them too).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def exporter_port(config: Path) -> int:
    for line in config.read_text().splitlines():
        if line.startswith("listen"):
            return int(line.split(":")[-1].strip('" '))
    raise AssertionError("no listen line")


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
