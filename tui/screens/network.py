"""Network detail: per-interface rates with microburst counts and qdisc state, TCP counters, recent net events."""
from __future__ import annotations

from typing import Any, Iterable

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widget import Widget

from gpusleuth.probes.net.snapshot import LastBurst, NetSnapshot, RootQdisc, TcpSnapshot
from gpusleuth.tui import fmt, views
from gpusleuth.tui.screens.base import DATA_ERRORS, DataScreen
from gpusleuth.tui.source import HISTORY_S, Frame, Want
from gpusleuth.tui.widgets.panel import Panel
from gpusleuth.tui.widgets.row_table import RowTable

SPAN_NS = int(HISTORY_S * 1e9)
NET_EVENTS_SHOWN = 50


def _top(counts: dict[str, int], n: int = 2) -> str:
    if not counts:
        return ""
    best = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v}" for k, v in best)


def tcp_text(tcp: TcpSnapshot | None) -> Text:
    """Retransmits and drops of the net probe's TCP part, with their top remotes, processes and reasons."""
    if tcp is None:
        return Text("TCP retransmit / drop tracing is off or has nothing yet", style="dim")
    r, d = tcp.retransmits, tcp.drops
    line = Text.assemble(("retransmits ", "bold"), f"{r.segments} segments")
    if r.by_remote:
        line.append(f" · to {_top(r.by_remote)}")
    if r.by_process:
        line.append(f" · by {_top(r.by_process)}")
    lines = [line]
    line = Text.assemble(("drops ", "bold"), str(d.count))
    if d.by_reason:
        line.append(f" · {_top(d.by_reason, 3)}")
    lines.append(line)
    scalars = [f"{name} {v}" for name, v in (("events_suppressed", tcp.events_suppressed),
                                             ("missed_events", tcp.missed_events)) if v]
    if scalars:
        lines.append(Text("  ".join(scalars), style="yellow"))
    return Text("\n").join(lines)


def qdisc_text(q: RootQdisc | None) -> str:
    if q is None:
        return "—"
    return f"{q.kind or '?'} backlog {fmt.size(q.backlog_bytes)} drops {q.drops}"


class NetworkScreen(DataScreen):
    KEY, LABEL = "network", "Network"
    WANT = Want(sources=frozenset({"agent", "net"}), is_events=True)

    def compose_body(self) -> Iterable[Widget]:
        with VerticalScroll(id="net-body"):
            yield Panel("Interfaces (bits/s, 5 min)", id="net-title")
            yield RowTable("interface", "dir", "rate", "last 5 min", "bursts", "last burst", "qdisc",
                            id="net-ifaces", zebra_stripes=False)
            yield Panel("TCP", id="net-tcp")
            yield Panel("Recent network events", id="net-events-title")
            yield RowTable("time", "kind", "process", "duration", "detail", id="net-events", zebra_stripes=False)

    def show_frame(self, frame: Frame) -> None:
        title = self.query_one("#net-title", Panel)
        reason = views.missing_reason(frame, "net")
        try:
            rows = [] if reason else views.net_rows(frame)
            if reason or not rows:
                title.show_missing(reason or "no interfaces watched")
            else:
                title.show(Text(f"{len({r['iface'] for r in rows})} interface(s); burst: time bins over the "
                                "interface's threshold", style="dim"))
            self._fill_ifaces(rows, frame)
            snap: NetSnapshot | None = frame.snapshots.get("net")
            self.query_one("#net-tcp", Panel).show(tcp_text(snap.tcp if snap is not None else None))
        except DATA_ERRORS as exc:
            title.show_missing(f"unexpected net data ({type(exc).__name__}: {exc})")
        self._fill_events(frame)

    def _fill_ifaces(self, rows_in: list[dict[str, Any]], frame: Frame) -> None:
        rows = []
        for r in rows_in:
            burst: LastBurst | None = r["last_burst"]
            last = (f"{fmt.bps(burst.peak_bps)} {fmt.size(burst.bytes)} "
                    f"{fmt.ago(burst.end_ns, frame.t_ns)}") if burst is not None else "—"
            peak = max((v for _, v in r["series"]), default=0.0)
            spark = fmt.spark(r["series"], frame.t_ns, SPAN_NS, 24, 0, max(peak, 1e6))
            rows.append((f"{r['iface']}/{r['direction']}", (r["iface"], r["direction"], fmt.bps(r["bps"]),
                         Text(spark, style="cyan"), str(r["bursts"]), last, qdisc_text(r["qdisc"]))))
        self.query_one("#net-ifaces", RowTable).show_rows(rows)

    def _fill_events(self, frame: Frame) -> None:
        events = [e for e in frame.events if e.get("source") == "net" or str(e.get("kind", "")).startswith("net.")]
        events = events[-NET_EVENTS_SHOWN:]
        self.query_one("#net-events", RowTable).show_rows([(str(e.get("seq")), (
            fmt.clock(e["start_ns"], frame.wall_offset_ns, is_ms=True), e.get("kind", ""), views.who(e),
            fmt.dur_ns(e["end_ns"] - e["start_ns"]), fmt.trunc(views.event_detail(e), 100))) for e in reversed(events)])
        self.query_one("#net-events-title", Panel).show(
            Text(f"{len(events)} recent network events" if events else "no network events yet", style="dim"))
