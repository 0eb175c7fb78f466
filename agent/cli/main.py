"""`agent` / `gpusleuth` command line.

Exit codes: 0 ok; 1 unexpected error; 2 bad usage or configuration (names the key or flag); 3 state conflict
(already running on `start`, not running on `stop`/`status`); 4 missing privileges; 5 the agent failed to start.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap

from gpusleuth.agent import config as config_mod
from gpusleuth.agent import daemon
from gpusleuth.agent.control.client import AgentNotRunning, ControlClient, ControlError, ControlPermissionDenied
from gpusleuth.agent.cli.format import format_probes, format_status
from gpusleuth.probes import procname, registry

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_STATE, EXIT_PRIVILEGE, EXIT_STARTUP = 0, 1, 2, 3, 4, 5
log = logging.getLogger("gpusleuth.agent")

EXAMPLES = {
    "start": """
        sudo agent start                       # daemonize with /etc/gpusleuth/agent.toml
        sudo agent start --foreground          # for systemd (Type=simple) or debugging
        sudo agent start --config ./agent.toml --probes syscalls,sched""",
    "stop": """
        sudo agent stop""",
    "status": """
        sudo agent status
        sudo agent status --json | jq .probes
        sudo agent status --memory show       # store, heap in use / free, Arrow pool""",
    "demo": """
        sudo agent demo                        # agent + engine (tiny) + load + TUI
        sudo agent demo --no-tui --duration 60 # no terminal: a report of the slowest request
        sudo agent demo --preset llama3-8b -- --tp 2""",
    "explain": """
        sudo agent explain cmpl-4f2a...        # one request: budget, causes, evidence, runbook
        sudo agent explain --slowest 3         # the three requests with the most excess
        sudo agent explain --window 5m --min-excess-ms 50 --json
        agent explain --recording /var/lib/gpusleuth/recording --slowest""",
    "probes": """
        agent probes                           # what each probe needs and whether this host has it
        agent probes --ebpf syscalls           # print the generated BPF C of a probe
        agent probes cuda                      # CUDA/NCCL libraries and symbols of each watched process
        sudo agent probes cuda --launches --seconds 2 --pid 1234   # every kernel launch of pid 1234 for 2 s""",
}


def _parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="agent", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="gpusleuth: why was this inference request slow? eBPF + NVML + engine spans on one clock.",
        epilog=textwrap.dedent("""
            examples:
              sudo agent start && sudo agent status
              sudo agent tui                         # triage screen (needs a running agent)
              agent engine serve --preset tiny       # the bundled engine
            exit codes: 0 ok, 1 error, 2 bad usage/config, 3 already/not running, 4 no privileges, 5 start failed"""))
    top.add_argument("--config", default=None, help=f"config file (default {config_mod.DEFAULT_PATH})")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="examples:" + textwrap.dedent(EXAMPLES.get(name, "")))
        p.add_argument("--config", default=argparse.SUPPRESS, help="config file")
        return p

    p = add("start", "start the agent (daemonizes unless --foreground)")
    p.add_argument("--foreground", action="store_true", help="stay in the foreground, log to stderr")
    p.add_argument("--probes", default=None, help="comma-separated probes to run (overrides probes.enabled)")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    p = add("stop", "stop the running agent (SIGTERM, waits for probes to detach)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    p = add("status", "per-probe status, uptime, drops, recording")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--memory", choices=["show", "trace", "untrace"], help="where the agent's memory goes (JSON); "
                   "trace: start tracemalloc (slows the agent), then `show` lists what grew; untrace: stop it")
    p = add("probes", "what each probe needs and whether this host has it")
    p.add_argument("probe", nargs="?", choices=["cuda"], help="cuda: libraries and symbols per watched process")
    p.add_argument("--launches", action="store_true", help="with cuda: trace every kernel launch (root)")
    p.add_argument("--seconds", type=float, default=5.0, help="with --launches: how long (default 5)")
    p.add_argument("--pid", type=int, action="append", default=[], help="with cuda: these processes, not [watch]")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--ebpf", metavar="PROBE", help="print the generated BPF C text of PROBE and exit")
    p = add("explain", "why was a request slow: its latency budget and the causes of its excess")
    from gpusleuth.agent.cli import explain  # noqa: PLC0415
    explain.add_arguments(p)
    p = add("demo", "the main job: agent + bundled engine under generated load + the TUI")
    from gpusleuth.agent.cli import demo  # noqa: PLC0415
    demo.add_arguments(p)
    from gpusleuth.agent.cli import runbook  # noqa: PLC0415
    runbook.add_subcommand(add, COMMANDS)
    from gpusleuth.agent.cli import mcp  # noqa: PLC0415
    mcp.add_subcommand(add, COMMANDS)
    for name, help_text in (("bundle", "gather an offline install bundle for air-gapped hosts (agent bundle --help)"),
                            ("engine", "the bundled inference engine (agent engine --help)"),
                            ("tui", "the live triage screen (agent tui --help)")):
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config: list[str] = []
    if len(argv) >= 3 and argv[0] == "--config":  # `agent --config X tui ...`
        config, argv = argv[:2], argv[2:]
    if argv and argv[0] in ("engine", "tui"):
        return _forward(argv[0], (config if argv[0] == "tui" else []) + argv[1:])
    argv = config + argv
    if argv and argv[0] == "bundle":
        from gpusleuth.agent.cli.bundle import main as bundle_main  # noqa: PLC0415
        return bundle_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except config_mod.ConfigError as exc:
        print(f"agent: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ControlPermissionDenied as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return EXIT_PRIVILEGE
    except AgentNotRunning as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return EXIT_STATE


def _forward(what: str, rest: list[str]) -> int:
    if what == "engine":
        try:
            from gpusleuth.engine.cli import main as engine_main  # noqa: PLC0415 - needs the engine extra
        except ImportError as exc:
            print(f"agent engine: the engine is not installed ({exc}); pip install 'gpusleuth[engine]'",
                  file=sys.stderr)
            return EXIT_USAGE
        procname.set_thread_name(procname.ENGINE)  # `agent engine ...` is an engine process
        return engine_main(rest)
    from gpusleuth.agent.cli.tui import main as tui_main  # noqa: PLC0415
    return tui_main(rest)


def _load_config(args) -> config_mod.Config:
    path = getattr(args, "config", None)
    return config_mod.load(path, is_required=path is not None)


def _apply_probe_override(cfg: config_mod.Config, probes: str | None) -> None:
    if probes is None:
        return
    names = [n.strip() for n in probes.split(",") if n.strip()]
    unknown = [n for n in names if n not in registry.PROBES]
    if unknown:
        raise config_mod.ConfigError("--probes", f"unknown probe {unknown[0]!r}; known probes: "
                                     f"{', '.join(registry.PROBES)}")
    enabled = {"probes": {"enabled": names}}
    fresh = config_mod.from_mapping(enabled, source=cfg.source)
    cfg.enabled_probes = fresh.enabled_probes
    for n in names:
        cfg.probes.setdefault(n, fresh.probes[n])


def _privilege_error() -> int:
    print("agent: starting the agent needs root, or CAP_BPF + CAP_PERFMON (+ CAP_NET_ADMIN for the net "
          "probe): run `sudo agent start`", file=sys.stderr)
    return EXIT_PRIVILEGE


def cmd_start(args) -> int:
    from gpusleuth.probes.bpf.host import has_bpf_privileges  # noqa: PLC0415
    if not has_bpf_privileges():  # before reading the config: a user without privileges may not read it either
        return _privilege_error()
    cfg = _load_config(args)
    _apply_probe_override(cfg, args.probes)
    if args.log_level:
        cfg.agent.log_level = args.log_level
    if not has_bpf_privileges(need_net_admin="net" in cfg.enabled_probes):
        return _privilege_error()
    pidfile = daemon.PidFile(cfg.agent.pid_file)
    try:
        pidfile.acquire()
    except daemon.AlreadyRunning as exc:
        print(f"agent: {exc}; `sudo agent status` shows it, `sudo agent stop` stops it", file=sys.stderr)
        return EXIT_STATE
    ready_fd = None
    if not args.foreground:
        is_daemon, fd = daemon.daemonize()
        if not is_daemon:
            ok, detail = daemon.wait_ready(fd)
            if ok:
                print(f"agent started (pid {pidfile.read_pid()}); {detail}")
                return EXIT_OK
            print(f"agent: failed to start: {detail}", file=sys.stderr)
            return EXIT_STARTUP
        ready_fd = fd
    daemon.setup_logging(cfg.agent.log_level, None if args.foreground else cfg.agent.log_file)
    return _run_agent(cfg, pidfile, ready_fd)


def _run_agent(cfg: config_mod.Config, pidfile: daemon.PidFile, ready_fd: int | None) -> int:
    procname.set_thread_name(procname.AGENT)  # before the probe threads start: they inherit it
    from gpusleuth.agent.runtime import Agent, StartupError  # noqa: PLC0415 - keeps `agent --help` fast
    pidfile.write(os.getpid())
    if pidfile.stale_pid and pidfile.stale_pid != os.getpid():
        log.warning("recovered a stale pid file left by pid %d (it did not stop cleanly)", pidfile.stale_pid)
    agent = Agent(cfg)
    if cfg.exporter.is_enabled:
        from gpusleuth.exporters.server import ExporterServer, ExportOptions  # noqa: PLC0415
        ex = cfg.exporter
        options = ExportOptions(ex.series_budget, ex.top_threads, ex.bucket_factor)
        agent.add_service(ExporterServer(agent.store, *ex.address, ex.render_interval_s, options),
                          f"exporter.listen {cfg.exporter.listen}")
    if cfg.exporter.otlp_traces_endpoint:
        from gpusleuth.exporters.otlp_traces import TraceExporter  # noqa: PLC0415
        agent.add_service(TraceExporter(agent.store, cfg.exporter.otlp_traces_endpoint, agent.diagnosis),
                          f"exporter.otlp_traces_endpoint {cfg.exporter.otlp_traces_endpoint}")
    daemon.install_stop_handlers(agent.stop_event)
    try:
        agent.start()
    except (StartupError, OSError) as exc:
        log.error("startup failed: %s", exc)
        daemon.notify(ready_fd, f"error: {exc}")
        agent.shutdown()
        pidfile.release()
        return EXIT_STARTUP
    states = {n: r.status()["state"] for n, r in agent.runners.items()}
    summary = ", ".join(f"{n}: {s}" for n, s in states.items())
    log.info("agent running (pid %d); probes %s", os.getpid(), summary)
    daemon.notify(ready_fd, f"ok probes {summary}; log {cfg.agent.log_file}")
    try:
        agent.run()
    finally:
        agent.shutdown()
        pidfile.release()
    return EXIT_OK


def cmd_stop(args) -> int:
    cfg = _load_config(args)
    pidfile = daemon.PidFile(cfg.agent.pid_file)
    pid = pidfile.holder()
    if pid is None:
        print("agent: no agent is running (nothing to stop)", file=sys.stderr)
        return EXIT_STATE
    if pid < 0:
        print(f"agent: the pid file {cfg.agent.pid_file} is locked but holds no pid", file=sys.stderr)
        return EXIT_ERROR
    try:
        stopped = daemon.signal_and_wait(pid, pidfile, args.timeout)
    except PermissionError:
        print(f"agent: not allowed to signal the agent (pid {pid}): run `sudo agent stop`", file=sys.stderr)
        return EXIT_PRIVILEGE
    if not stopped:
        print(f"agent: pid {pid} did not stop within {args.timeout:g} s; see {cfg.agent.log_file}",
              file=sys.stderr)
        return EXIT_ERROR
    print(f"agent stopped (pid {pid})")
    return EXIT_OK


def cmd_status(args) -> int:
    cfg = _load_config(args)
    with ControlClient(cfg.control.socket, timeout=120) as client:
        if args.memory:
            trace = {"show": None, "trace": True, "untrace": False}[args.memory]
            print(json.dumps(client.call("memory", trace=trace), indent=2))
            return EXIT_OK
        status = client.call("status")
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return EXIT_OK


def cmd_probes(args) -> int:
    cfg = _load_config(args)
    if args.ebpf:
        if args.ebpf not in registry.PROBES:
            raise config_mod.ConfigError("--ebpf", f"unknown probe {args.ebpf!r}; known: {', '.join(registry.PROBES)}")
        probe = registry.probe_class(args.ebpf)(cfg.probes.get(args.ebpf) or registry.config_class(args.ebpf)())
        if not hasattr(probe, "source"):
            raise config_mod.ConfigError("--ebpf", f"probe {args.ebpf!r} has no BPF program")
        print(probe.source())
        return EXIT_OK
    if args.probe == "cuda":
        return _probes_cuda(args, cfg)
    reqs = registry.requirements_report(list(registry.PROBES))
    print(json.dumps(reqs, indent=2) if args.json else format_probes(reqs, cfg.enabled_probes))
    return EXIT_OK


def _probes_cuda(args, cfg: config_mod.Config) -> int:
    from gpusleuth.agent.watch import Watcher  # noqa: PLC0415
    from gpusleuth.probes.cuda import report  # noqa: PLC0415

    pids = set(args.pid) or set(Watcher(cfg.watch).resolve().tgids)
    if not args.launches:
        found = report.discover(pids)
        print(json.dumps(found, indent=2) if args.json else report.format_discovery(found))
        return EXIT_OK
    if os.geteuid() != 0:
        print("agent: tracing launches loads BPF programs: run as root (sudo agent probes cuda --launches)",
              file=sys.stderr)
        return EXIT_PRIVILEGE
    events = report.trace_launches(pids, args.seconds)
    print(json.dumps([e.to_dict() for e in events]) if args.json else report.format_launches(events, args.seconds))
    return EXIT_OK


def cmd_explain(args) -> int:
    from gpusleuth.agent.cli import explain  # noqa: PLC0415
    return explain.run(args, _load_config(args).control.socket)


def cmd_demo(args) -> int:
    from gpusleuth.agent.cli import demo  # noqa: PLC0415
    return demo.run(args, _load_config(args))


COMMANDS = {"demo": cmd_demo, "explain": cmd_explain, "start": cmd_start, "stop": cmd_stop, "status": cmd_status,
            "probes": cmd_probes}

if __name__ == "__main__":
    sys.exit(main())
