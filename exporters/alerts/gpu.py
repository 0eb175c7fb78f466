"""Alerts on the GPUs: lost, XIDs by severity, ECC and row remapping, throttling while busy, a shared GPU."""
from __future__ import annotations

from gpusleuth.exporters.alerts.model import Alert, Group, num
from gpusleuth.exporters.alerts.params import AlertParams

XID_SEVERITIES = {  # XID severity (probes/gpu/xid_table.py) -> (alert suffix, alert severity)
    "fatal": ("Fatal", "critical"),
    "recoverable": ("Recoverable", "warning"),
    "app": ("Application", "info"),
}


def new_or_increased(series: str, window: str) -> str:
    """True for a counter that grew within `window`, or that appeared within it with a value above 0 (increase()
    alone misses a series born at 1, such as the first XID of a code)."""
    return f"(increase({series}[{window}]) > 0) or ({series} > 0 unless {series} offset {window})"


def _xids(p: AlertParams) -> list[Alert]:
    out = []
    for severity, (suffix, level) in XID_SEVERITIES.items():
        series = f'gpusleuth_gpu_xid_errors_total{{job="{p.agent_job}", severity="{severity}"}}'
        out.append(Alert(
            f"GpusleuthGpuXid{suffix}", new_or_increased(series, p.rate_window), "0s", level,
            f"XID {{{{ $labels.xid }}}} ({{{{ $labels.name }}}}, {severity}) on GPU {{{{ $labels.gpu }}}} of "
            "{{ $labels.instance }}",
            f"The driver reported XID {{{{ $labels.xid }}}} {{{{ $labels.name }}}} on GPU {{{{ $labels.gpu }}}} "
            f"({{{{ $labels.UUID }}}}): {{{{ $value | humanize }}}} within {p.rate_window} (or since the agent "
            "started).",
            "gpu-error"))
    return out


def group(p: AlertParams) -> Group:
    """The GPU group."""
    agent, w = f'job="{p.agent_job}"', p.rate_window
    lost = Alert(
        "GpusleuthGpuLost", f"gpusleuth_gpu_lost{{{agent}}} == 1", "0s", "critical",
        "GPU {{ $labels.gpu }} of {{ $labels.instance }} is lost",
        "NVML reports GPU {{ $labels.gpu }} ({{ $labels.UUID }}, bus {{ $labels.pci_bus_id }}) lost: it fell off "
        "the bus or needs a reset; every engine on it has stopped making progress.", "gpu-lost")
    dbe = f'DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{agent}}}'
    remapped = f'DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS{{{agent}}}'
    ecc = Alert(
        "GpusleuthGpuEccErrors", f"(increase({dbe}[{w}]) > 0) or (increase({remapped}[{w}]) > 0)", "0s",
        "critical", "Uncorrectable memory errors on GPU {{ $labels.gpu }} of {{ $labels.instance }}",
        f"{{{{ $value | humanize }}}} new double-bit ECC errors or rows remapped for uncorrectable errors within {w} "
        "on GPU {{ $labels.gpu }} ({{ $labels.UUID }}): results computed on it may be wrong.", "gpu-memory-errors")
    remap = Alert(
        "GpusleuthGpuRowRemap",
        f"(gpusleuth_gpu_row_remap_pending{{{agent}}} == 1) or (DCGM_FI_DEV_ROW_REMAP_FAILURE{{{agent}}} == 1)",
        "0s", "warning", "GPU {{ $labels.gpu }} of {{ $labels.instance }} needs a reset for row remapping",
        "GPU {{ $labels.gpu }} ({{ $labels.UUID }}) has a row remap pending a reset, or remapping failed "
        "(value {{ $value }}): drain it and reset it.", "gpu-memory-errors")
    throttled = Alert(
        "GpusleuthGpuThrottledBusy",
        f"(DCGM_FI_DEV_GPU_UTIL{{{agent}}} >= {num(p.gpu_busy_util_pct)}) and on (job, instance, UUID) "
        f"(gpusleuth_gpu_throttled{{{agent}}} == 1)", "10m", "warning",
        "Busy GPU {{ $labels.gpu }} of {{ $labels.instance }} has been throttled for 10 minutes",
        "GPU {{ $labels.gpu }} ({{ $labels.modelName }}) is {{ $value }} % busy while its clocks are held down "
        "by power, thermal or hardware slowdown; gpusleuth_gpu_clock_event_reason names the reason.", "gpu-clocks")
    procs = f'gpusleuth_gpu_process_memory_used_bytes{{{agent}, comm!~"{p.gpu_ignored_comms}"}}'
    shared = Alert(
        "GpusleuthGpuForeignProcess", f"count by (job, instance, gpu, UUID) ({procs}) > 1", "5m", "warning",
        "GPU {{ $labels.gpu }} of {{ $labels.instance }} is shared by {{ $value }} processes",
        "{{ $value }} processes hold memory on GPU {{ $labels.gpu }} ({{ $labels.UUID }}): a process other than "
        "the engine competes for its SMs and memory bandwidth.", "gpu-contention")
    return Group("gpu", (lost, *_xids(p), ecc, remap, throttled, shared))
