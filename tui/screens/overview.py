"""Overview: incidents first (newest first, culprit, runbook; `c` runs its checks), then GPUs, engine, slowest
syscalls, run-queue latency and interfaces on one screen (fits 80x24)."""
from __future__ import annotations

from typing import Iterable

from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget

from gpusleuth.probes.engines.snapshot import DiscoveredEngine, EnginesSnapshot
from gpusleuth.probes.net.snapshot import LastBurst
from gpusleuth.tui import fmt, views
from gpusleuth.tui.screens.base import DATA_ERRORS, DataScreen
from gpusleuth.tui.source import ALL_SOURCES, HISTORY_S, Frame, Want
from gpusleuth.tui.widgets.incidents import IncidentsPanel
from gpusleuth.tui.widgets.panel import Panel

TOP_N = 5  # at 80x24; taller terminals show more (see top_n)


def top_n(height: int) -> int:
    """Rows per latency panel: 5 fit 24 lines with two GPUs and one interface; more where the screen is taller."""
    return max(TOP_N, min(20, TOP_N + (height - 24) // 2))
SPAN_NS = int(HISTORY_S * 1e9)


def gpu_line(row: dict, series: dict, t_ns: int, width: int) -> Text:
    """`0 H100  util 87% ▂▅▇  SM 62%  412/700W  61°C  mem 61.2/80.0G  ⚠sw_power_cap` fitted to `width`."""
    if row["is_lost"]:
        return Text(f"{row['index']} {row['name']}  LOST: {row['lost_reason']}", style="bold red")
    power = fmt.num(row["power"], 0, "W") + (f"/{row['power_limit']:.0f}W" if row["power_limit"] else "")
    mem = f"{fmt.mib(row['mem_used'])}/{fmt.mib(row['mem_total'])}" if row["mem_total"] else fmt.mib(row["mem_used"])
    name = fmt.trunc(row["name"].replace("NVIDIA ", ""), 12)
    tail = Text(f"  SM {fmt.pct(row['sm_active'])}  {power}  {fmt.num(row['temp'], 0, '°C')}  mem {mem}")
    if row["throttle"]:
        tail.append(f"  ⚠{','.join(row['throttle'])}", style="bold yellow")
    if row["last_xid"]:
        tail.append(f"  XID {row['last_xid']}", style="bold red")
    head = Text.assemble((f"{row['index']} ", "bold"), f"{name:<12} util {fmt.pct(row['util']):>4} ")
    spark_w = max(4, min(60, width - head.cell_len - tail.cell_len))
    points = series.get(f"gpu.{row['index']}.util_gpu_pct") or []
    line = head + Text(fmt.spark(points, t_ns, SPAN_NS, spark_w, 0, 100), style="green") + tail
    line.truncate(width, overflow="ellipsis")
    return line


def engine_text(frame: Frame, width: int) -> Text:
    s = views.engine_stats(frame)
    rate = fmt.spark(frame.series.get("engine.rps") or [], frame.t_ns, SPAN_NS, max(4, min(20, width - 60)))
    gauges = f"  in flight {fmt.num(s.get('in_flight'))}"
    if "queue" in s or "running" in s:
        gauges += f"  queue {fmt.num(s.get('queue'))}  running {fmt.num(s.get('running'))}"
    gauges += f"  KV {fmt.pct(s.get('kv'), 100 if (s.get('kv') or 0) <= 1 else 1)}"
    line1 = Text.assemble(("req/s ", "bold"), f"{s['rps']:.1f} ", (rate, "cyan"), gauges)
    basis = f"last {s['basis_s']:.0f} s" if s["is_recent"] else "last finished"
    line2 = Text(f"TTFT p50 {fmt.dur_s(s['ttft_s_p50'])} p99 {fmt.dur_s(s['ttft_s_p99'])}   "
                 f"TPOT p50 {fmt.dur_s(s['tpot_s_p50'])} p99 {fmt.dur_s(s['tpot_s_p99'])}   "
                 f"({basis}, {s['n']} req)")
    return Text("\n").join([line1, line2])


def discovered_line(pid: int, e: DiscoveredEngine, width: int) -> Text:
    """`vllm(4242) :8000  running 3 queue 1 KV 42%  TTFT p50 120ms p99 400ms  ITL p50 12ms` (engine discovery)."""
    head = Text.assemble((f"{e.kind}({pid})", "bold"), f" {e.metrics_url.split('//')[-1].split('/')[0]}  ")
    if not e.metrics_url:
        line = head + Text(f"no metrics: {e.scrape_error or 'not scraped yet'}", style="dim")
    else:
        line = head + Text(f"running {fmt.num(e.num_running)} queue {fmt.num(e.num_waiting)} "
                           f"KV {fmt.pct(e.kv_usage, 100)}  TTFT p50 {fmt.dur_s(e.ttft_p50_s)} "
                           f"p99 {fmt.dur_s(e.ttft_p99_s)}  ITL p50 {fmt.dur_s(e.itl_p50_s)}")
    line.truncate(width, overflow="ellipsis")
    return line


def discovered_lines(snap: EnginesSnapshot | None, width: int) -> list[Text]:
    return [discovered_line(pid, e, width) for pid, e in sorted((snap.engines if snap else {}).items())]


def latency_lines(rows: list[dict], width: int, has_syscall: bool) -> Text:
    """`python3(4242) read   12.3ms n=880`, narrower columns when the panel is narrow (80 columns: two panels)."""
    who_w, what_w = (14, 8) if width < 56 else (20, 14)
    lines = []
    for r in rows:
        who = fmt.trunc(f"{r['comm']}({r['pid']})", who_w)
        what = f" {fmt.trunc(r.get('syscall', ''), what_w):<{what_w}}" if has_syscall else ""
        p99 = fmt.dur_ns(r["p99_ns"]) if r["p99_ns"] is not None else "~" + fmt.dur_ns(r["avg_ns"])
        line = Text.assemble(f"{who:<{who_w}}{what} ", (f"{p99:>7}", "bold"), f" n={r['count']}")
        line.truncate(width, overflow="ellipsis")
        lines.append(line)
    return Text("\n").join(lines) if lines else Text("nothing in the window", style="dim")


def net_lines(rows: list[dict], t_ns: int, width: int) -> Text:
    lines = []
    for r in rows:
        head = Text.assemble((f"{fmt.trunc(r['iface'], 10):<10}", "bold"), f" {r['direction'][:3]:<3} ",
                             f"{fmt.bps(r['bps']):>10} ")
        burst: LastBurst | None = r["last_burst"]
        tail = Text(f"  bursts {r['bursts']}")
        if burst is not None:
            tail.append(f" ▲{fmt.bps(burst.peak_bps)} {fmt.ago(burst.end_ns, t_ns)}", style="magenta")
        spark_w = max(4, min(60, width - head.cell_len - tail.cell_len))
        peak = max((v for _, v in r["series"]), default=0.0)
        # never stretch a near-idle link to full height: scale to at least 1 Mb/s
        line = head + Text(fmt.spark(r["series"], t_ns, SPAN_NS, spark_w, 0, max(peak, 1e6)), style="cyan") + tail
        line.truncate(width, overflow="ellipsis")
        lines.append(line)
    return Text("\n").join(lines)


class OverviewScreen(DataScreen):
    KEY, LABEL = "overview", "Overview"
    WANT = Want(sources=frozenset(ALL_SOURCES) | {"engines"}, is_requests=True, is_incidents=True)
    BINDINGS = [Binding("c", "run_checks", "Run the selected incident's runbook checks")]

    def __init__(self) -> None:
        super().__init__()
        self._memos: dict[str, views.Memo] = {}
        self._has_incidents = False  # incidents take the rows the latency panels give up at 24 lines

    def compose_body(self) -> Iterable[Widget]:
        with VerticalScroll(id="overview-body"):
            yield IncidentsPanel(id="ov-incidents-box")
            yield Panel("GPUs", id="ov-gpu")
            yield Panel("Engine", id="ov-engine")
            with Horizontal(id="ov-pair"):
                yield Panel("Syscalls p99 (10 s, no idle waits)", id="ov-syscalls")
                yield Panel("Run queue: p99 (10 s)", id="ov-runq")
            yield Panel("Network", id="ov-net")

    def show_frame(self, frame: Frame) -> None:
        box = self.query_one(IncidentsPanel)
        box.max_rows = max(2, min(10, (self.size.height - 24) // 3 + 2))  # 2 at 80x24, more when taller
        box.is_evidence = self.size.height >= 40
        try:
            box.show(frame.incidents, frame.t_ns, frame.wall_offset_ns, frame.notes.get("incidents", ""))
        except DATA_ERRORS as exc:
            box.border_title = f"Incidents: unexpected data ({type(exc).__name__}: {exc})"
        self._has_incidents = bool(frame.incidents)
        for panel_id, probe, draw in (("ov-gpu", "gpu", self._gpu), ("ov-engine", "spans", self._engine),
                                      ("ov-syscalls", "syscalls", self._syscalls), ("ov-runq", "sched", self._runq),
                                      ("ov-net", "net", self._net)):
            panel = self.query_one(f"#{panel_id}", Panel)
            try:
                draw(panel, frame, max(20, panel.content_size.width or 76))
            except DATA_ERRORS as exc:
                panel.show_missing(f"unexpected {probe} data ({type(exc).__name__}: {exc})")

    def _gpu(self, panel: Panel, frame: Frame, width: int) -> None:
        reason = views.missing_reason(frame, "gpu")
        rows = views.gpu_rows(frame.snapshots.get("gpu"))
        if reason or not rows:
            panel.show_missing(reason or "the GPU probe found no GPUs")
            return
        panel.show(Text("\n").join(gpu_line(r, frame.series, frame.t_ns, width) for r in rows))

    def _engine(self, panel: Panel, frame: Frame, width: int) -> None:
        found = discovered_lines(frame.snapshots.get("engines"), width)  # engines we did not write, by discovery
        if frame.requests is None and frame.snapshots.get("spans") is None:
            if found:
                panel.show(Text("\n").join(found))
                return
            panel.show_missing(frame.notes.get("requests") or views.missing_reason(frame, "spans") or "no requests")
            return
        note = [Text(frame.notes["explain"], style="dim")] if frame.notes.get("explain") else []
        panel.show(Text("\n").join([engine_text(frame, width), *found, *note]))

    def _latency(self, panel: Panel, frame: Frame, probe: str, key: str, width: int) -> None:
        rows = frame.windows.get(key)
        if rows is None or (not rows and views.missing_reason(frame, probe)):
            panel.show_missing(views.missing_reason(frame, probe) or "no data")
            return
        n = top_n(self.size.height) - (2 if self._has_incidents and self.size.height < 30 else 0)
        memo = self._memos.setdefault(key, views.Memo())
        # idle waits (epoll_wait, futex, sleeps) are slow by design: they would fill the panel and hide real stalls
        panel.show(memo.get(rows, (n, width), lambda: latency_lines(
            views.top_latency(rows, n, is_waits_hidden=True), width, key == "syscalls")))

    def _syscalls(self, panel: Panel, frame: Frame, width: int) -> None:
        self._latency(panel, frame, "syscalls", "syscalls", width)

    def _runq(self, panel: Panel, frame: Frame, width: int) -> None:
        self._latency(panel, frame, "sched", "runq", width)

    def _net(self, panel: Panel, frame: Frame, width: int) -> None:
        reason = views.missing_reason(frame, "net")
        rows = views.net_rows(frame)
        if reason or not rows:
            panel.show_missing(reason or "no interfaces watched")
            return
        panel.show(net_lines(rows, frame.t_ns, width))

    def action_run_checks(self) -> None:
        chosen = self.query_one(IncidentsPanel).selected()
        if chosen is None:
            self.flash("no incident selected: runbook checks run for an incident (or a request's verdict)")
            return
        self.app.run_runbook(str(chosen.get("runbook", "")), f"incident {chosen.get('cause')}")

    def on_row_table_selected(self, event) -> None:
        if event.table.id == "ov-incidents":
            self.action_run_checks()
