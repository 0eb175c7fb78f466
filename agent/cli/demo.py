"""`agent demo`: the main job. The agent, the bundled engine serving a model under generated load, then the TUI.

Starts the agent unless one runs (and stops it again at the end if it started it), starts the engine with its spans
going to the agent, drives it with a Poisson load generator, and opens `agent tui`. Without a terminal (or with
--no-tui) it runs for --duration seconds printing a live line every --every seconds (demo_report.py), then the
agent's status, the incidents and the explanation of the three slowest requests.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from gpusleuth.agent import config as config_mod
from gpusleuth.agent.control.client import AgentNotRunning, ControlClient
from gpusleuth.agent.cli.demo_report import DemoWatch
from gpusleuth.agent.cli.loadgen import LoadGenerator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent_cmd(config_path: str | None, *args: str) -> list[str]:
    base = [sys.executable, "-m", "gpusleuth.agent.cli.main"]
    return base + (["--config", config_path] if config_path else []) + list(args)


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def _is_agent_running(cfg: config_mod.Config) -> bool:
    try:
        with ControlClient(cfg.control.socket, timeout=5) as c:
            c.call("ping")
        return True
    except AgentNotRunning:
        return False


def run(args, cfg: config_mod.Config) -> int:
    if not 0.5 <= args.every <= 3600:
        print(f"agent demo: --every {args.every:g} is out of range: use 0.5 to 3600 seconds", file=sys.stderr)
        return 2
    started_agent = False
    if not _is_agent_running(cfg):
        res = subprocess.run(_agent_cmd(args.config, "start"), stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            return res.returncode
        started_agent = True
    span_cfg = cfg.probes.get("spans")
    env = dict(os.environ)
    if span_cfg is not None:
        env["GPUSLEUTH_SPAN_SOCKET"] = span_cfg.socket
    port = args.port or _free_port()
    engine_cmd = [sys.executable, "-m", "gpusleuth.engine", "serve", "--preset", args.preset, "--host",
                  "127.0.0.1", "--port", str(port), *args.engine_args]
    print(f"demo: starting the engine: {' '.join(engine_cmd[2:])}", flush=True)
    engine = subprocess.Popen(engine_cmd, env=env, stdin=subprocess.DEVNULL)
    load = None
    try:
        if not _wait_http(f"http://127.0.0.1:{port}/health", args.engine_timeout, engine):
            print("demo: the engine did not become healthy (see its output above)", file=sys.stderr)
            return 5
        load = LoadGenerator(f"http://127.0.0.1:{port}", rate_per_s=args.rate)
        load.start()
        print(f"demo: engine on http://127.0.0.1:{port}, load {args.rate:g} req/s", flush=True)
        if sys.stdin.isatty() and sys.stdout.isatty() and not args.no_tui:
            from gpusleuth.agent.cli.tui import main as tui_main  # noqa: PLC0415
            return tui_main((["--config", args.config] if args.config else []))
        return _run_headless(cfg, load, args.duration, args.every, engine)
    finally:
        if load is not None:
            load.stop()
        engine.terminate()  # SIGTERM: the engine stops cleanly and removes its fault files
        try:
            engine.wait(timeout=30)
        except subprocess.TimeoutExpired:
            engine.kill()
        if started_agent and not args.keep_agent:
            subprocess.run(_agent_cmd(args.config, "stop"), stdin=subprocess.DEVNULL)


def _run_headless(cfg: config_mod.Config, load: LoadGenerator, duration_s: float, every_s: float,
                  engine: subprocess.Popen) -> int:
    """--duration seconds of load with a live line every --every seconds, then the report."""
    with ControlClient(cfg.control.socket) as client:
        watch = DemoWatch(client, int(client.call("status")["monotonic_ns"]))
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < duration_s:
            time.sleep(min(every_s, duration_s - elapsed))
            if engine.poll() is not None:
                print(f"demo: the engine exited (code {engine.returncode}); see its output above", file=sys.stderr)
                return 5
            print(watch.line(time.monotonic() - t0, duration_s, load.stats), flush=True)
        text, code = watch.final(load.stats)
    print(text, flush=True)
    return code


def add_arguments(p) -> None:
    p.add_argument("--preset", default="tiny", help="engine model preset (default tiny)")
    p.add_argument("--rate", type=float, default=4.0, help="requests per second (Poisson, default 4)")
    p.add_argument("--port", type=int, default=0, help="engine HTTP port (default: a free one)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds to run without the TUI (default 30)")
    p.add_argument("--every", type=float, default=5.0, help="seconds between the live lines without the TUI "
                   "(default 5)")
    p.add_argument("--no-tui", action="store_true", help="print live lines and a report instead of the TUI")
    p.add_argument("--keep-agent", action="store_true", help="leave the agent running afterwards")
    p.add_argument("--engine-timeout", type=float, default=300.0, help="seconds to wait for the engine")
    p.add_argument("engine_args", nargs="*", help="extra engine flags after --, e.g. -- --tp 2")

