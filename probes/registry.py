"""Every probe the agent knows, by name, imported lazily so `agent probes` works even where one cannot load."""
from __future__ import annotations

import importlib
from typing import Any

# name -> "module:Class". Each module must import fine without bcc/pyroute2/NVML present (import those in start()).
PROBES: dict[str, str] = {
    "syscalls": "gpusleuth.probes.kernel.syscalls:SyscallProbe",
    "sched": "gpusleuth.probes.kernel.sched:SchedProbe",
    "net": "gpusleuth.probes.net.probe:NetProbe",
    "gpu": "gpusleuth.probes.gpu.probe:GpuProbe",
    "spans": "gpusleuth.probes.spans.probe:SpanProbe",
    "cuda": "gpusleuth.probes.cuda.probe:CudaProbe",
    "otlp": "gpusleuth.probes.otlp.probe:OtlpProbe",
    "engines": "gpusleuth.probes.engines.probe:EnginesProbe",
    "nvtx": "gpusleuth.probes.nvtx.probe:NvtxProbe",
}
# Not on by default: cuda, whose uprobes cost each watched CUDA call 0.5-16 us (README "CUDA and NCCL uprobes");
# otlp, which listens on TCP ports an OpenTelemetry Collector may already hold (README "Engines we did not write").
OPT_IN: frozenset[str] = frozenset({"cuda", "otlp"})
DEFAULT_ENABLED: tuple[str, ...] = tuple(name for name in PROBES if name not in OPT_IN)


def probe_class(name: str) -> Any:
    """The Probe subclass registered under `name` (KeyError for unknown names, ImportError if not installed)."""
    module, _, cls = PROBES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def config_class(name: str) -> type:
    return probe_class(name).config_class


def requirements_report(names: list[str] | None = None) -> dict[str, Any]:
    """For `agent probes`: per probe, whether it loads and what it needs, checked on this host now."""
    out = {}
    for name in names or list(PROBES):
        try:
            cls = probe_class(name)
        except ImportError as exc:
            out[name] = {"loadable": False, "error": str(exc), "requirements": []}
            continue
        reqs = cls.requirements()
        out[name] = {"loadable": True, "ready": all(r.is_met or r.is_optional for r in reqs),
                     "requirements": [{"name": r.name, "met": r.is_met, "optional": r.is_optional,
                                       "detail": r.detail, "fix": r.how_to_fix}
                                      for r in reqs]}
    return out
