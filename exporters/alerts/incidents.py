"""Alerts on the diagnosis' incidents (diagnosis contract §3): one alert per cause while an incident of it is open,
and one for causes whose incidents keep coming back.

Series: gpusleuth_incident_active{cause, engine_pid, culprit_comm} (1 while open), gpusleuth_incidents_total{cause}.
The cause list is the contract's; each cause's runbook is runbooks/<cause with _ -> ->.md.
"""
from __future__ import annotations

from gpusleuth.exporters.alerts.model import Alert, Group, num
from gpusleuth.exporters.alerts.params import AlertParams

# cause -> (severity, for, what it means for the engine); order as in the contract
CAUSES: dict[str, tuple[str, str, str]] = {
    "cpu_contention": ("warning", "1m", "engine threads wait for a CPU that other tasks hold"),
    "process_frozen": ("critical", "30s", "the engine is stopped or frozen (SIGSTOP, cgroup freezer, a debugger)"),
    "cgroup_throttling": ("warning", "1m", "the engine's cgroup runs out of CPU quota"),
    "softirq": ("warning", "1m", "interrupt and softirq work takes the engine's CPUs"),
    "blocking_io": ("warning", "1m", "engine threads block in I/O syscalls"),
    "memory_reclaim": ("warning", "1m", "engine threads stall in direct memory reclaim"),
    "engine_stall": ("critical", "30s", "the engine's step loop stopped with requests in flight"),
    "gc_pause": ("warning", "1m", "Python garbage collection pauses the step loop"),
    "gil_contention": ("warning", "1m", "the step thread waits for the GIL"),
    "queueing": ("warning", "5m", "requests wait for a batch slot or KV-cache blocks"),
    "batch_interference": ("info", "5m", "long prefills slow the decode steps they share"),
    "gpu_contention": ("warning", "1m", "another process competes for the engine's GPU"),
    "gpu_clocks": ("warning", "5m", "the engine's GPU runs at reduced clocks"),
    "gpu_error": ("critical", "0s", "the engine's GPU reported an error (XID) or was lost"),
    "network": ("warning", "5m", "the network delays the engine's traffic (microbursts, retransmits)"),
    "tp_straggler": ("warning", "1m", "one tensor-parallel rank holds back every step"),
}


def alert_name(cause: str) -> str:
    """`cpu_contention` -> `GpusleuthIncidentCpuContention`."""
    return "GpusleuthIncident" + "".join(part.capitalize() for part in cause.split("_"))


def _active(cause: str, p: AlertParams) -> Alert:
    severity, for_, meaning = CAUSES[cause]
    return Alert(
        alert_name(cause), f'gpusleuth_incident_active{{job="{p.agent_job}", cause="{cause}"}} == 1', for_, severity,
        f"{cause} incident open on {{{{ $labels.instance }}}} (culprit {{{{ $labels.culprit_comm }}}})",
        f"The agent's diagnosis has an open {cause} incident for engine pid {{{{ $labels.engine_pid }}}}: {meaning}. "
        "Culprit: {{ $labels.culprit_comm }}. `agent explain --window 5m` gives the figures.",
        cause.replace("_", "-"))


def group(p: AlertParams) -> Group:
    """The incidents group."""
    recurring = Alert(
        "GpusleuthIncidentsRecurring",
        f'sum by (job, instance, cause) (increase(gpusleuth_incidents_total{{job="{p.agent_job}"}}[1h])) >= '
        f"{num(p.incidents_per_hour)}", "0s", "warning",
        "{{ $labels.cause }} incidents keep recurring on {{ $labels.instance }}",
        "{{ $value | humanize }} {{ $labels.cause }} incidents opened in the last hour (alert at "
        f"{num(p.incidents_per_hour)}): each may be too short to page, together they hurt the tail latency.",
        '{{ reReplaceAll "_" "-" $labels.cause }}')
    return Group("incidents", (*(_active(c, p) for c in CAUSES), recurring))
