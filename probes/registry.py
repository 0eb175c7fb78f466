"""Every probe the agent knows, by name, imported lazily so `agent probes` works even where one cannot load."""
from __future__ import annotations

import importlib
from typing import Any

# name -> "module:Class". Each module must import fine without bcc/pyroute2/NVML present (import those in start()).
PROBES: dict[str, str] = {
    "syscalls": "gpusleuth.probes.syscalls:SyscallProbe",
    "sched": "gpusleuth.probes.sched:SchedProbe",
    "net": "gpusleuth.probes.net:NetProbe",
    "gpu": "gpusleuth.probes.gpu:GpuProbe",
    "spans": "gpusleuth.probes.spans:SpanProbe",
}
DEFAULT_ENABLED: tuple[str, ...] = tuple(PROBES)


def probe_class(name: str) -> Any:
    """The Probe subclass registered under `name` (KeyError for unknown names, ImportError if not installed)."""
    module, _, cls = PROBES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def config_class(name: str) -> type:
    return probe_class(name).config_class
