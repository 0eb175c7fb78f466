"""The processes the runner starts, each stopped by its pid: the agent, the engine, the load generator, the
actors of a fault. Which agent and which Python run is a `Tools` (--venv / --agent / --python)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from gpusleuth.agent.control.client import ControlClient

HERE = Path(__file__).resolve().parent


@dataclass
class Tools:
    agent: str  # the `agent` command
    python: str  # runs the engine (and the GPU actor, which needs torch)
    env: dict[str, str] = field(default_factory=dict)  # extra environment (PYTHONPATH for an uninstalled checkout)

    def environ(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **self.env, **extra}


def cpu_seconds(pid: int, with_children: bool = True) -> float:
    """CPU time (user + system) of `pid` and, optionally, its live descendants; 0 if it is gone."""
    try:
        procs = [psutil.Process(pid)]
        if with_children:
            procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def stop_pid(pid: int, timeout_s: float = 15.0) -> None:
    """SIGTERM (after SIGCONT, in case a fault left it stopped), then SIGKILL after `timeout_s`."""
    for sig in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
    try:
        psutil.Process(pid).wait(timeout_s)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        psutil.Process(pid).wait(10)


def _ready_line(proc: subprocess.Popen, what: str, timeout_s: float) -> dict:
    """The first JSON line a child prints, or RuntimeError with its stderr."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout_s):
        raise RuntimeError(f"{what} printed nothing within {timeout_s} s")
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"{what} exited rc={proc.wait()}: {err[-2000:]}")
    return json.loads(line)


class Actor:
    """A helper process of a fault (actors.py ROLE ...), optionally inside a namespace; `stop()` returns its CPU s."""

    def __init__(self, role: str, *args: str, prefix: list[str] | None = None, python: str | None = None) -> None:
        cmd = [*(prefix or []), python or sys.executable, str(HERE / "actors.py"), role, *args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.pid = _ready_line(self.proc, f"actor {role}", 120)["ready"]
        self.t0, self.cpu0 = time.monotonic(), cpu_seconds(self.pid)

    def cpu_share(self) -> float:
        """CPU it has used since it was ready, in CPUs (1.0 = one whole CPU)."""
        return (cpu_seconds(self.pid) - self.cpu0) / max(1e-3, time.monotonic() - self.t0)

    def stop(self) -> float:
        share = self.cpu_share()
        stop_pid(self.pid, 5)
        self.proc.wait(10)
        return share


class AgentProc:
    """`agent --config C start` (daemon; optionally pinned with taskset), its pid and a control client."""

    def __init__(self, tools: Tools, config: Path, tmp: Path, cpus: list[int], env: dict[str, str]) -> None:
        self.tools, self.config, self.tmp = tools, config, tmp
        cmd = [tools.agent, "--config", str(config), "start"]
        if cpus:
            cmd = ["taskset", "-c", ",".join(map(str, cpus)), *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=tools.environ(**env))
        if out.returncode != 0:
            log = tmp / "agent.log"
            raise RuntimeError(f"agent start failed (rc={out.returncode}): {out.stderr[-1000:]}\n"
                               f"{log.read_text()[-3000:] if log.exists() else ''}")
        self.pid = int((tmp / "agent.pid").read_text().strip())
        self.client = ControlClient(str(tmp / "agent.sock"), timeout=30)

    def stop(self) -> None:
        self.client.close()
        subprocess.run([self.tools.agent, "--config", str(self.config), "stop"], capture_output=True, timeout=60,
                       env=self.tools.environ())
        if psutil.pid_exists(self.pid):
            stop_pid(self.pid)


class Engine:
    """The bundled engine's HTTP server, started by `cmd` (already prefixed with netns and taskset)."""

    def __init__(self, cmd: list[str], url: str, env: dict[str, str], join_cgroup, log: Path) -> None:
        self.url, self.log = url, log
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env,
                                         preexec_fn=join_cgroup, start_new_session=True)
        self.pid = self.proc.pid  # `ip netns exec` and taskset exec, so this is the engine's own pid

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited rc={self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"engine not healthy within {timeout_s} s: {self.log.read_text()[-3000:]}")

    def comm(self) -> str:
        try:
            return Path(f"/proc/{self.pid}/comm").read_text().strip()
        except OSError:
            return ""

    def ranks(self) -> list[int]:
        """Pids of the engine and its rank processes (spawned children), rank 0 first."""
        try:
            kids = [p for p in psutil.Process(self.pid).children(recursive=True) if "python" in p.name().lower()
                    or p.name().startswith("gs-")]
        except psutil.NoSuchProcess:
            return []
        return [self.pid] + [p.pid for p in sorted(kids, key=lambda p: p.create_time())]

    def stop(self) -> None:
        pids = psutil.Process(self.pid).children(recursive=True) if psutil.pid_exists(self.pid) else []
        stop_pid(self.pid, 20)
        self.proc.wait(10)
        for child in pids:
            if child.is_running():
                stop_pid(child.pid, 5)


class LoadGen:
    """load.py in its own process: periodic arrivals, bursts on command, records in a JSON-lines file. It runs on
    the engine's Python, which has aiohttp (the engine's server needs it; an agent-only install may not)."""

    def __init__(self, python: str, url: str, out: Path, args: list[str], cpus: list[int]) -> None:
        self.out = out
        cmd = [python, str(HERE / "load.py"), "--url", url, "--out", str(out), *args]
        if cpus:
            cmd = ["taskset", "-c", ",".join(map(str, cpus)), *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        _ready_line(self.proc, "load generator", 60)
        self.pid = self.proc.pid
        self._offset = 0
        self.records: list[dict] = []  # finished requests, in the order they ended
        self._pending: dict[int, int] = {}  # seq -> t_send_ns of requests sent and not finished

    def burst(self, n: int, prompt_tokens: int, max_tokens: int, tag: str) -> None:
        self.proc.stdin.write(json.dumps({"burst": n, "prompt_tokens": prompt_tokens, "max_tokens": max_tokens,
                                          "tag": tag}) + "\n")
        self.proc.stdin.flush()

    def read(self) -> list[dict]:
        """Every finished request so far (new lines appended to `records`)."""
        with open(self.out, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        done = data[:data.rfind(b"\n") + 1]  # a line still being written waits for the next read
        self._offset += len(done)
        for rec in (json.loads(line) for line in done.splitlines() if line):
            if rec["event"] == "sent":
                self._pending[rec["seq"]] = rec["t_send_ns"]
            else:
                self._pending.pop(rec["seq"], None)
                self.records.append(rec)
        return self.records

    def num_pending(self, sent_before_ns: int) -> int:
        """Requests sent before `sent_before_ns` that have not finished yet (as of the last read)."""
        return sum(1 for t in self._pending.values() if t < sent_before_ns)

    def stop(self) -> None:
        stop_pid(self.pid, 10)
        self.proc.wait(10)
