"""Flags of `agent tui`, and opening the live source: find the socket, check the agent answers, map failures to exit
codes. (`agent tui` itself is gpusleuth.agent.cli.tui, which also opens recordings.)"""
from __future__ import annotations

import argparse
import sys
import textwrap

from gpusleuth.agent.control.client import (DEFAULT_CONFIG_PATH, AgentNotRunning, ControlError,
                                            ControlPermissionDenied)
from gpusleuth.agent.control.client import socket_path as configured_socket
from gpusleuth.probes.config import ConfigError
from gpusleuth.tui.source import DataSource

EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_PRIVILEGE = 1, 2, 3, 4
SCREEN_KEYS = ("overview", "requests", "gpu", "network", "syscalls", "events")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agent tui", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Live triage screen over the running agent's control socket, or a recording offline.",
        epilog=textwrap.dedent("""
            keys: tab / 1-6 screens, ? help, / filter (-term negates), i idle waits, enter report,
                  c runbook checks, q quit; replay: [ ] { } < > space
            examples:
              sudo agent tui                              # attach to the local agent
              agent tui --socket /run/gpusleuth/agent.sock  # as a member of control.group
              agent tui --recording /var/lib/gpusleuth/recording --screen events
            exit codes: 0 ok, 2 bad usage/config/recording, 3 no agent running, 4 no permission"""))
    p.add_argument("--config", default=None, help=f"agent config to find the socket (default {DEFAULT_CONFIG_PATH})")
    p.add_argument("--socket", default=None, help="control socket path (overrides the config's control.socket)")
    p.add_argument("--recording", metavar="DIR", default=None, help="open a recording (the [recorder] directory)")
    p.add_argument("--refresh", type=float, default=0.5, help="seconds between refreshes (default 0.5: 2 Hz)")
    p.add_argument("--screen", choices=SCREEN_KEYS, default="overview", help="screen to open on")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed while playing (default 1)")
    p.add_argument("--prometheus", metavar="URL", default=None,
                   help="Prometheus server for the runbooks' PromQL checks (`c`); without it they are skipped")
    p.add_argument("--frames-out", default=None, help=argparse.SUPPRESS)  # benchmarks: frames drawn, at exit
    return p


def _fail(message: str, code: int) -> int:
    print(f"agent tui: {message}", file=sys.stderr)
    return code


def socket_path(args: argparse.Namespace) -> str:
    """--socket, else control.socket of the config (raises ConfigError)."""
    if args.socket:
        return args.socket
    return configured_socket(args.config)


def check_args(args: argparse.Namespace) -> int | None:
    """An exit code after printing what to fix, or None when the flags are usable."""
    if not 0.05 <= args.refresh <= 60:
        return _fail(f"--refresh {args.refresh:g} is out of range: use 0.05 to 60 seconds", EXIT_USAGE)
    if not 0.01 <= args.speed <= 1000:
        return _fail(f"--speed {args.speed:g} is out of range: use 0.01 to 1000", EXIT_USAGE)
    return None


def open_live(args: argparse.Namespace) -> DataSource | int:
    """The running agent's control socket as a source, or an exit code after printing what to fix."""
    from gpusleuth.tui.source_live import LiveSource  # noqa: PLC0415
    try:
        path = socket_path(args)
    except PermissionError as exc:
        return _fail(f"permission denied reading {exc}: run as root (sudo), or pass --socket", EXIT_PRIVILEGE)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", EXIT_USAGE)
    source = LiveSource(path)
    try:
        source.call("status")
    except AgentNotRunning as exc:
        return _fail(f"{exc}; start it with `sudo agent start` (or pass --socket / --config)", EXIT_NOT_RUNNING)
    except ControlPermissionDenied as exc:
        return _fail(str(exc), EXIT_PRIVILEGE)
    except (ControlError, OSError) as exc:
        source.close()
        return _fail(f"the agent on {path} did not answer: {exc}", EXIT_ERROR)
    return source
