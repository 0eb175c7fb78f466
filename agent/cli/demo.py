"""`agent demo`: the main job. The agent, the bundled engine serving a model under generated load, then the TUI.

Starts the agent unless one runs (and stops it again at the end if it started it), starts the engine with its spans
going to the agent, drives it with a Poisson load generator, and opens `agent tui`. Without a terminal (or with
--no-tui) it runs for --duration seconds and prints the agent's status and the explanation of the slowest request.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from gpusleuth.agent import config as config_mod
from gpusleuth.agent.control.client import AgentNotRunning, ControlClient
from gpusleuth.agent.cli.format import format_status
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
        time.sleep(args.duration)
        return _report(cfg, load)
    finally:
        if load is not None:
            load.stop()
        engine.terminate()
        try:
            engine.wait(timeout=30)
        except subprocess.TimeoutExpired:
            engine.kill()
        if started_agent and not args.keep_agent:
            subprocess.run(_agent_cmd(args.config, "stop"), stdin=subprocess.DEVNULL)


def _report(cfg: config_mod.Config, load: LoadGenerator) -> int:
    s = load.stats
    last = f" (last error: {s.last_error})" if s.failed else ""
    print(f"\ndemo: load sent {s.sent}, ok {s.ok}, rejected {s.rejected}, failed {s.failed}{last}")
    with ControlClient(cfg.control.socket) as client:
        print(format_status(client.call("status")))
        rows = [r for r in client.call("requests") if r.get("e2e_s") is not None]
        if not rows:
            print("demo: the agent saw no finished requests (are spans enabled?)")
            return 1
        slowest = max(rows, key=lambda r: r["e2e_s"])
        report = client.call("explain", request_id=slowest["request_id"])
    print(f"\nslowest request {slowest['request_id']}: e2e {slowest['e2e_s'] * 1e3:.1f} ms, "
          f"ttft {(slowest['ttft_s'] or 0) * 1e3:.1f} ms, {slowest['output_tokens']} tokens")
    for v in report["verdicts"][:3]:
        print(f"  {v['score']:.2f} {v['cause']}: {v['evidence']} -> {v['runbook']}")
    if not report["verdicts"]:
        print("  no host event overlapped it")
    print(json.dumps({"requests_seen": len(rows), "slowest": slowest}, default=str))
    return 0


def add_arguments(p) -> None:
    p.add_argument("--preset", default="tiny", help="engine model preset (default tiny)")
    p.add_argument("--rate", type=float, default=4.0, help="requests per second (Poisson, default 4)")
    p.add_argument("--port", type=int, default=0, help="engine HTTP port (default: a free one)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds to run without the TUI (default 30)")
    p.add_argument("--no-tui", action="store_true", help="print a report instead of opening the TUI")
    p.add_argument("--keep-agent", action="store_true", help="leave the agent running afterwards")
    p.add_argument("--engine-timeout", type=float, default=300.0, help="seconds to wait for the engine")
    p.add_argument("engine_args", nargs="*", help="extra engine flags after --, e.g. -- --tp 2")

