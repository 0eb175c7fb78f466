"""GPU detail: every sampled value per GPU with wider sparklines, XIDs and throttling, and per-process use."""
from __future__ import annotations

from typing import Any, Iterable

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widget import Widget

from gpusleuth.probes.gpu.snapshot import GpuProcess, GpuState
from gpusleuth.tui import fmt, views
from gpusleuth.tui.screens.base import DATA_ERRORS, DataScreen
from gpusleuth.tui.source import HISTORY_S, Frame, Want
from gpusleuth.tui.widgets.panel import Panel
from gpusleuth.tui.widgets.row_table import RowTable

SPAN_NS = int(HISTORY_S * 1e9)
SPARKS = (("util_gpu_pct", "util", 0, 100), ("sm_active", "SM", 0, 1), ("power_w", "power", 0, None),
          ("fb_used_mib", "mem", 0, None))


def gpu_detail_text(row: dict[str, Any], frame: Frame, width: int) -> Text:
    """Several lines about one GPU: identity, utilisation, clocks/power/thermal, memory, links, health."""
    g: GpuState = row["raw"]
    gpm, num = g.gpm, fmt.num
    if row["is_lost"]:
        return Text(f"{row['name']} ({row['uuid']}) LOST: {row['lost_reason']}", style="bold red")
    pstate = "?" if g.pstate is None else g.pstate
    lines = [Text.assemble((f"{row['index']} {row['name']}", "bold"), f"  P{pstate}  {g.pci_bus_id}"
                           + ("  MIG" if row["is_mig"] else ""), (f"  {row['uuid']}" if width > 110 else "", "dim"))]
    lines.append(Text(f"util {fmt.pct(row['util'])}  mem-util {fmt.pct(g.util_mem_pct)}  "
                      f"SM {fmt.pct(gpm.sm_active, 100)}  occ {fmt.pct(gpm.sm_occupancy, 100)}  "
                      f"tensor {fmt.pct(gpm.tensor_active, 100)}  dram {fmt.pct(gpm.dram_active, 100)}"))
    limit = f" / {row['power_limit']:.0f}W" if row["power_limit"] else ""
    lines.append(Text(f"power {num(g.power_w, 0, 'W')} avg {num(g.power_avg_w, 0, 'W')}{limit}  "
                      f"temp {num(g.gpu_temp_c, 0, '°C')} mem {num(g.mem_temp_c, 0, '°C')}  "
                      f"clk {num(g.sm_clock_mhz)}/{num(g.mem_clock_mhz)} MHz"))
    lines.append(Text(f"memory {fmt.mib(row['mem_used'])} / {fmt.mib(row['mem_total'])}  "
                      f"PCIe ↑{fmt.size(g.pcie_tx_bytes_s)}/s ↓{fmt.size(g.pcie_rx_bytes_s)}/s  "
                      f"NVLink ↑{fmt.size(g.nvlink_tx_bytes_s)}/s ↓{fmt.size(g.nvlink_rx_bytes_s)}/s"))
    health = Text(f"ECC sbe {num(g.ecc_sbe_vol)} dbe {num(g.ecc_dbe_vol)}  remapped "
                  f"{num(g.remapped_rows_cor)}/{num(g.remapped_rows_unc)}  ")
    if row["throttle"]:
        since = row["throttle_since_ns"]
        held = f" for {fmt.dur_ns(frame.t_ns - since)}" if since else ""
        health.append(f"THROTTLED {','.join(row['throttle'])}{held}", style="bold yellow")
    else:
        health.append("not throttled", style="green")
    if g.xid_counts:
        health.append("  XIDs " + " ".join(f"{k}×{v}" for k, v in sorted(g.xid_counts.items())), style="bold red")
    lines.append(health)
    spark_w = max(8, (width - 28) // 4)
    sparks = Text()
    for key, label, lo, hi in SPARKS:
        points = frame.series.get(f"gpu.{row['index']}.{key}") or []
        sparks.append(f"{label} ")
        sparks.append(fmt.spark(points, frame.t_ns, SPAN_NS, spark_w, lo, hi), style="green")
        sparks.append("  ")
    lines.append(sparks)
    return Text("\n").join(lines)


class GpuScreen(DataScreen):
    KEY, LABEL = "gpu", "GPU"
    WANT = Want(sources=frozenset({"agent", "gpu"}))

    def compose_body(self) -> Iterable[Widget]:
        with VerticalScroll(id="gpu-body"):
            yield Panel("GPUs (last 5 min in sparklines)", id="gpu-cards")
            yield Panel("Processes on GPUs", id="gpu-proc-title")
            yield RowTable("GPU", "pid", "process", "type", "memory", "SM %", "mem %", id="gpu-procs",
                            zebra_stripes=False)

    def show_frame(self, frame: Frame) -> None:
        cards = self.query_one("#gpu-cards", Panel)
        reason = views.missing_reason(frame, "gpu")
        try:
            rows = views.gpu_rows(frame.snapshots.get("gpu"))
            if reason or not rows:
                cards.show_missing(reason or "the GPU probe found no GPUs")
                rows = []
            else:
                width = max(40, cards.content_size.width or 76)
                cards.show(Text("\n\n").join(gpu_detail_text(r, frame, width) for r in rows))
        except DATA_ERRORS as exc:
            cards.show_missing(f"unexpected gpu data ({type(exc).__name__}: {exc})")
            rows = []
        self._fill_processes(rows)

    def _fill_processes(self, rows: list[dict[str, Any]]) -> None:
        procs: list[tuple[int, GpuProcess]] = [(r["index"], p) for r in rows for p in r["raw"].processes]
        self.query_one("#gpu-proc-title", Panel).show(Text(f"{len(procs)} processes", style="dim"))
        self.query_one("#gpu-procs", RowTable).show_rows([(f"{index}/{p.pid}", (
            str(index), str(p.pid), fmt.trunc(p.comm, 20), p.type, fmt.mib(p.used_mib), fmt.pct(p.sm_util_pct),
            fmt.pct(p.mem_util_pct))) for index, p in procs])
