"""Which Prometheus collectors the agent's exporter serves, imported lazily (a missing one is skipped and logged)."""
from __future__ import annotations

# "module:Class"; each class is constructed as Class(store) and implements prometheus_client's collect().
COLLECTORS: tuple[str, ...] = (
    "gpusleuth.exporters.health:AgentHealthCollector",
    "gpusleuth.exporters.syscalls:SyscallCollector",
    "gpusleuth.exporters.sched:SchedCollector",
    "gpusleuth.exporters.net:NetCollector",
    "gpusleuth.exporters.dcgm:DcgmCollector",
    "gpusleuth.exporters.gpu:GpuCollector",
    "gpusleuth.exporters.requests:RequestCollector",
    "gpusleuth.exporters.cuda:CudaCollector",
    "gpusleuth.exporters.incidents:IncidentCollector",
    "gpusleuth.exporters.otlp_traces:TraceExportCollector",
)
