"""Alerting end to end with real parts: a real agent (eBPF probes, the diagnosis) and the bundled engine under load,
scraped by a real Prometheus (Debian package) evaluating the shipped rules (rendered with test parameters: 1 s
scrape and evaluation, `for:` 5 s, short rate windows), sending to a real Alertmanager whose webhook receiver is a
small HTTP server here.

One clean window (CLEAN_S, 5 min) sends no notification, and during it every metric name the rules, runbooks and
dashboard use appears in the live scrapes and every dashboard query returns data. Then an engine freeze (SIGSTOP)
and CPU hogs pinned to the engine's CPU: the matching alerts arrive with their runbook URL within
(scrape + evaluation + for) + 10 s, resolve after the fault ends, and `agent runbook --alert X` prints checks
whose figures confirm the fault. The only fake is NVML (this host has no GPU): the agent runs with
tests/fake_nvml.py as its pynvml, which also injects an XID when the test asks.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from gpusleuth.agent.cli.loadgen import LoadGenerator
from gpusleuth.agent.control.client import ControlClient
from gpusleuth.agent.harness import AGENT, free_port, wait_for, write_config
from gpusleuth.exporters.alerts import catalog
from gpusleuth.exporters.alerts.params import AlertParams
from gpusleuth.exporters.alerts.render import groups, write
from gpusleuth.exporters.grafana.dashboard import dashboard, targets
from gpusleuth.exporters.registry import COLLECTORS
from gpusleuth.probes.net.testbed import veth_pair, wait_line
from gpusleuth.runbooks.book import load_all
from gpusleuth.runbooks.promql import metric_names
from gpusleuth.agent.cli.runbook import vocabulary

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which("prometheus-alertmanager") is None,
                                 reason="Debian packages prometheus and prometheus-alertmanager (agent/install.sh)")]

SCRAPE_S, EVAL_S, FOR_S = 1, 1, 5
BOUND_S = SCRAPE_S + EVAL_S + FOR_S + 10  # the bound on an alert's arrival after the fault starts
RESOLVE_S = 60
CLEAN_S = float(os.environ.get("GPUSLEUTH_E2E_CLEAN_S", 300))
PARAMS = AlertParams(for_override=f"{FOR_S}s", rate_window="30s", stall_window="4s", ttft_slo_seconds=5.0,
                     itl_slo_seconds=1.0)
FOREIGN_MAX = 0.05  # a clean window needs the engine's CPU to itself: others may take at most this share of it
HAS_INCIDENTS = "gpusleuth.exporters.incidents:IncidentCollector" in COLLECTORS
NO_INCIDENTS = "gpusleuth_incident_active is not exported yet (exporters/incidents.py not registered)"
TESTS = Path(__file__).parent
# The engine gets a CPU of its own, everything else of the test the others (as a host would pin it): contention
# on the engine's CPU is then the fault the test injects, not the test's own Prometheus or load generator.
ENGINE_CPU = max(os.sched_getaffinity(0))
OTHER_CPUS = (os.sched_getaffinity(0) - {ENGINE_CPU}) or {ENGINE_CPU}

LAUNCH_AGENT = """
import os, sys, threading, time
sys.path.insert(0, {tests!r})
import fake_nvml
fake = fake_nvml.FakeNvml(1)
fake.gpus[0].util_gpu = 35
fake.gpus[0].processes = [dict(pid=os.getpid(), used=1 << 30, kind="C")]
sys.modules["pynvml"] = fake  # NVML is the hardware boundary: this host has no GPU
def gpu():  # fresh per-process SM samples (NVML keeps a buffer of them), and an XID when the test asks
    while True:
        g = fake.gpus[0]
        g.proc_util = g.proc_util[-20:] + [(os.getpid(), fake_nvml.wall_us(), 20, 5)]
        if os.path.exists({trigger!r}):
            os.remove({trigger!r})
            fake.inject_event(0, fake.nvmlEventTypeXidCriticalError, 13)
        time.sleep(0.2)
threading.Thread(target=gpu, daemon=True).start()
from gpusleuth.agent.cli.main import main
sys.exit(main(["--config", {config!r}, "start", "--foreground"]))
"""
HOG = ("import ctypes, os; ctypes.CDLL(None).prctl(15, b'gs-e2e-hog', 0, 0, 0); "
       "os.sched_setaffinity(0, {%d})\nwhile True: pass")


class Hook(BaseHTTPRequestHandler):
    """Alertmanager's webhook: every notification's alerts, with the time they arrived."""

    received: list[tuple[float, dict]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        now = time.monotonic()
        Hook.received += [(now, a) for a in body.get("alerts", [])]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@dataclass
class Stack:
    tmp: Path
    config: Path
    socket: str
    agent_port: int
    engine_port: int
    prom_url: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    seen_names: set[str] = field(default_factory=set)
    load: LoadGenerator | None = None

    @property
    def engine(self) -> subprocess.Popen:
        return self.procs["engine"]

    def query(self, expr: str) -> list[dict]:
        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)["data"]["result"]

    def scrape_names(self) -> set[str]:
        """Sample names in the agent's and the engine's /metrics now (added to seen_names)."""
        names = set()
        for port in (self.agent_port, self.engine_port):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                    text = resp.read().decode()
            except OSError:  # the engine does not answer while it is frozen
                assert port == self.engine_port and self.engine.poll() is None, f"no /metrics on port {port}"
                continue
            names |= {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)}
        self.seen_names |= names
        return names


def _spawn(name: str, stack: Stack, cmd: list[str], cpus: set[int] = OTHER_CPUS, **kw) -> subprocess.Popen:
    log = open(stack.tmp / f"{name}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: os.sched_setaffinity(0, cpus), **kw)
    stack.procs[name] = proc
    return proc


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _start_agent(stack: Stack) -> None:
    code = LAUNCH_AGENT.format(tests=str(TESTS), trigger=str(stack.tmp / "xid"), config=str(stack.config))
    _spawn("agent", stack, [sys.executable, "-c", code])
    wait_for(lambda: _get_ok(f"http://127.0.0.1:{stack.agent_port}/metrics") and os.path.exists(stack.socket),
             timeout=180, interval=0.5)
    def not_ok() -> dict:
        status = json.loads(subprocess.run([AGENT, "--config", str(stack.config), "status", "--json"],
                                           capture_output=True, text=True, timeout=30).stdout)
        return {n: p for n, p in status["probes"].items() if p["state"] != "ok"}

    try:
        wait_for(lambda: not not_ok(), timeout=60, interval=1)
    except AssertionError:
        raise AssertionError(f"every probe must be ok for a clean window: {not_ok()}") from None


def _start_engine(stack: Stack) -> None:
    env = {**os.environ, "GPUSLEUTH_SPAN_SOCKET": str(stack.tmp / "spans.sock")}
    _spawn("engine", stack, [sys.executable, "-m", "gpusleuth.engine", "serve", "--preset", "tiny", "--cpu-threads",
                             "1", "--host", "127.0.0.1", "--port", str(stack.engine_port)], cpus={ENGINE_CPU},
           env=env)
    wait_for(lambda: _get_ok(f"http://127.0.0.1:{stack.engine_port}/health"), timeout=300, interval=0.5)


def _start_alerting(stack: Stack, hook_port: int, am_port: int, prom_port: int) -> None:
    am = stack.tmp / "alertmanager.yml"
    am.write_text(yaml.safe_dump({
        "route": {"receiver": "hook", "group_by": ["..."], "group_wait": "1s", "group_interval": "1s",
                  "repeat_interval": "1h"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": f"http://127.0.0.1:{hook_port}/",
                                                            "send_resolved": True}]}]}))
    _spawn("alertmanager", stack, ["prometheus-alertmanager", f"--config.file={am}",
                                   f"--storage.path={stack.tmp / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                                   "--cluster.listen-address=", "--log.level=warn"])
    rules = write(PARAMS, stack.tmp / "rules")
    prom = stack.tmp / "prometheus.yml"
    prom.write_text(yaml.safe_dump({
        "global": {"scrape_interval": f"{SCRAPE_S}s", "scrape_timeout": f"{SCRAPE_S}s",
                   "evaluation_interval": f"{EVAL_S}s"},
        "rule_files": [str(p) for p in rules],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [
            {"job_name": PARAMS.agent_job, "static_configs": [{"targets": [f"127.0.0.1:{stack.agent_port}"]}]},
            {"job_name": PARAMS.engine_job, "static_configs": [{"targets": [f"127.0.0.1:{stack.engine_port}"]}]}]}))
    wait_for(lambda: _get_ok(f"http://127.0.0.1:{am_port}/-/ready"), timeout=60, interval=0.5)
    _spawn("prometheus", stack, ["prometheus", f"--config.file={prom}", f"--storage.tsdb.path={stack.tmp / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}", "--rules.alert.resend-delay=1s",
                                 "--log.level=warn"])
    wait_for(lambda: _get_ok(f"{stack.prom_url}/-/ready"), timeout=60, interval=0.5)
    wait_for(lambda: len(stack.query("up == 1")) == 2, timeout=60, interval=0.5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("alerts_e2e")
    extra = (f'\n[probes.spans]\nsocket = "{tmp}/spans.sock"\n'
             # a late poll (bcc compiling the other probes at start) must not lose bins: that degrades the probe
             '[probes.net]\ninterfaces = ["lo"]\nburst_threshold_mbps = 100000.0\nring_s = 10.0\n')
    config = write_config(tmp, ["syscalls", "sched", "net", "gpu", "spans"], extra=extra,
                          watch="comms = []\nrescan_interval_s = 0.5")
    hook_port, am_port, prom_port = free_port(), free_port(), free_port()
    listen = next(line for line in config.read_text().splitlines() if line.startswith("listen"))
    s = Stack(tmp, config, str(tmp / "agent.sock"), int(listen.split(":")[-1].strip('" ')), free_port(),
              f"http://127.0.0.1:{prom_port}")
    hook = ThreadingHTTPServer(("127.0.0.1", hook_port), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    own_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, OTHER_CPUS)  # the load generator's threads too
    try:
        _start_agent(s)
        _start_engine(s)
        s.load = LoadGenerator(f"http://127.0.0.1:{s.engine_port}", rate_per_s=6.0, max_tokens=(16, 48))
        s.load.start()
        _start_alerting(s, hook_port, am_port, prom_port)
        yield s
    finally:
        if s.load is not None:
            s.load.stop()
        for name, proc in reversed(list(s.procs.items())):
            if name == "engine" and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # never leave it stopped
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        hook.shutdown()
        hook.server_close()
        os.sched_setaffinity(0, own_cpus)


def _notifications(since: float) -> list[tuple[float, dict]]:
    return [(t, a) for t, a in Hook.received if t >= since]


def _arrived(name: str, since: float, status: str = "firing") -> tuple[float, dict] | None:
    return next(((t, a) for t, a in _notifications(since) if a["labels"]["alertname"] == name
                 and a["status"] == status), None)


def _used_names() -> dict[str, set[str]]:
    """Every metric name the rules, the runbooks and the dashboard select -> where it is used."""
    used: dict[str, set[str]] = {}
    recorded = {r.record for g in groups(PARAMS) for r in g.rules if hasattr(r, "record")}
    for g in groups(PARAMS):
        for r in g.rules:
            for n in metric_names(r.expr) - recorded:
                used.setdefault(n, set()).add(f"rule {getattr(r, 'name', getattr(r, 'record', ''))}")
    for b in load_all(vocabulary()):
        for c in b.checks:
            if c.source == "promql":
                for n in metric_names(c.query) - recorded:
                    used.setdefault(n, set()).add(f"runbook {b.id}")
    for title, expr in targets(dashboard()):
        for n in metric_names(_concrete(expr)) - recorded:
            used.setdefault(n, set()).add(f"dashboard {title}")
    return used


def _concrete(expr: str) -> str:
    """A dashboard query with Grafana's variables filled in (every instance, GPU and engine)."""
    m = re.fullmatch(r"label_values\((.*), (\w+)\)", expr)
    expr = m.group(1) if m else expr
    return (expr.replace("$__rate_interval", "30s").replace("$instance", ".*").replace("$gpu", ".*")
            .replace("$engine", ".*"))


def _cpu_ticks(stack: Stack) -> tuple[int, int]:
    """(busy ticks of the engine's CPU, ticks the engine's threads ran), from /proc."""
    fields = next(ln.split() for ln in Path("/proc/stat").read_text().splitlines()
                  if ln.startswith(f"cpu{ENGINE_CPU} "))
    busy = sum(int(v) for v in fields[1:]) - int(fields[4]) - int(fields[5])  # all but idle and iowait
    engine = 0
    for task in Path(f"/proc/{stack.engine.pid}/task").iterdir():
        after_comm = (task / "stat").read_text().rsplit(")", 1)[1].split()
        engine += int(after_comm[11]) + int(after_comm[12])  # utime, stime
    return busy, engine


def test_clean_window_sends_nothing_and_the_dashboard_has_data(stack):
    start = time.monotonic()
    ticks0 = _cpu_ticks(stack)
    stack.scrape_names()
    time.sleep(min(60.0, CLEAN_S))  # rates over their windows, the SLO ratios, a few scrapes
    empty = [title for title, expr in targets(dashboard()) if not stack.query(_concrete(expr))]
    assert not empty, f"dashboard queries without data: {empty}"
    while time.monotonic() - start < CLEAN_S:
        stack.scrape_names()
        assert stack.engine.poll() is None and stack.procs["agent"].poll() is None
        time.sleep(10)
    firing = [a["metric"] for a in stack.query('ALERTS{alertstate="firing"}')]
    sent = [a["labels"] for _, a in _notifications(start)]
    ticks1 = _cpu_ticks(stack)
    foreign = (ticks1[0] - ticks0[0] - (ticks1[1] - ticks0[1])) / (os.sysconf("SC_CLK_TCK") * CLEAN_S)
    if (sent or firing) and foreign > FOREIGN_MAX:
        pytest.skip(f"not a clean host: other tasks took {foreign:.0%} of the engine's CPU {ENGINE_CPU} (the "
                    f"alerts name them: {sorted({str(a.get('culprit_comm')) for a in sent})})")
    assert not sent and not firing, f"notified: {sent}; firing: {firing}"


def _confirms(stack: Stack, alert: str) -> list[dict]:
    """The checks of `agent runbook --alert ALERT` that confirm the fault (status fail)."""
    res = subprocess.run([AGENT, "runbook", "--alert", alert, "--socket", stack.socket, "--prometheus",
                          stack.prom_url, "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    checks = json.loads(res.stdout)["checks"]
    assert not [c for c in checks if c["status"] == "error"], checks
    return [c for c in checks if c["status"] == "fail"]


def _fault(stack: Stack, expected: dict[str, bool], start_fault, stop_fault) -> None:
    """Start the fault, wait for each expected alert (value: whether it needs the incident metrics), check its
    runbook confirms it, stop the fault, wait for the alerts to resolve."""
    def already() -> set[str]:
        return {a["metric"]["alertname"] for a in stack.query("ALERTS")} & set(expected)

    try:  # the previous fault's alerts (and incidents) must be over first
        wait_for(lambda: not already(), timeout=RESOLVE_S, interval=1)
    except AssertionError:  # an incident of the same cause is open: the fault cannot raise a new alert
        pytest.skip(f"not a clean host: {sorted(already())} already pending or firing before the fault")
    t0 = time.monotonic()
    start_fault()
    try:
        for alert, needs_incidents in expected.items():
            if needs_incidents and not HAS_INCIDENTS:
                continue
            hit = wait_for(lambda: _arrived(alert, t0), timeout=BOUND_S + 20, interval=0.2)
            assert hit[0] - t0 <= BOUND_S, f"{alert} arrived after {hit[0] - t0:.1f} s (bound {BOUND_S} s)"
            assert hit[1]["annotations"]["runbook_url"].startswith(PARAMS.runbook_base_url + "/")
            assert _confirms(stack, alert), f"no check of {alert}'s runbook confirms the fault"
        stack.scrape_names()  # series that exist only during a fault (stuck threads)
    finally:
        stop_fault()
    t1 = time.monotonic()
    for alert, needs_incidents in expected.items():
        if not needs_incidents or HAS_INCIDENTS:
            wait_for(lambda: _arrived(alert, t1, "resolved"), timeout=RESOLVE_S, interval=0.5)
    if not HAS_INCIDENTS and any(expected.values()):
        pytest.xfail(NO_INCIDENTS)


def _long_request(stack: Stack) -> threading.Thread:
    """A request that stays in flight for seconds, so the freeze catches one (GpusleuthEngineNoSpans needs it)."""
    body = json.dumps({"model": stack.load.model, "prompt": "hold", "max_tokens": 1500, "ignore_eos": True,
                       "temperature": 0.0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{stack.engine_port}/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})

    def send() -> None:
        try:
            urllib.request.urlopen(req, timeout=300).read()
        except OSError:
            pass  # the engine may answer 400 for too long a request: then another load request is in flight

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_engine_freeze_pages_with_its_runbooks(stack):
    pid = stack.engine.pid
    _long_request(stack)
    with ControlClient(stack.socket) as client:  # the agent's count, not Prometheus' (a scrape behind)
        wait_for(lambda: client.call("snapshot", sources=["spans"])["spans"]["in_flight"] > 0, timeout=30,
                 interval=0.05)
    _fault(stack, {"GpusleuthEngineDown": False, "GpusleuthEngineNoSpans": False,
                   "GpusleuthIncidentProcessFrozen": True},
           lambda: os.kill(pid, signal.SIGSTOP), lambda: os.kill(pid, signal.SIGCONT))


def test_cpu_hog_on_the_engine_cpu_pages_with_its_runbook(stack):
    hogs: list[subprocess.Popen] = []

    def start() -> None:
        hogs.extend(subprocess.Popen([sys.executable, "-c", HOG % ENGINE_CPU]) for _ in range(2))

    def stop() -> None:
        for h in hogs:
            h.kill()
            h.wait()

    _fault(stack, {"GpusleuthIncidentCpuContention": True}, start, stop)


def _retransmits(stack: Stack) -> None:
    """A TCP flow through 5 % loss between two namespaces: retransmits the agent counts host-wide (the series
    exists only once a segment was retransmitted)."""
    from tests.net_helpers import ForeignFilter

    with veth_pair() as pair:
        sink = pair.spawn(pair.ns_b, "sink")
        sink.stdout.readline()
        loss = ForeignFilter(pair.ns_b, pair.if_b, "ingress", prio=1, name="e2e_loss_5pct", drop_pct=5.0)
        try:
            wait_line(pair.spawn(pair.ns_a, "bulk", "--seconds", "2"), 60)
            wait_for(lambda: "gpusleuth_net_tcp_retransmit_segments_total" in stack.scrape_names(), timeout=30)
        finally:
            loss.close()
            sink.kill()
            sink.wait()


def test_every_metric_name_used_exists_in_a_live_scrape(stack):
    t0 = time.monotonic()
    (stack.tmp / "xid").touch()  # the fake NVML's XID 13 (application): the XID series and its alert
    wait_for(lambda: _arrived("GpusleuthGpuXidApplication", t0), timeout=BOUND_S + 20, interval=0.2)
    _retransmits(stack)
    stack.scrape_names()
    live = stack.seen_names | set(catalog.PROMETHEUS)
    missing = {n: sorted(w) for n, w in _used_names().items() if n not in live}
    if not HAS_INCIDENTS:
        missing = {n: w for n, w in missing.items() if n not in ("gpusleuth_incident_active",
                                                               "gpusleuth_incidents_total")}
    assert not missing, f"used but never scraped: {missing}"
