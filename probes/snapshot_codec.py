"""The snapshot type of each source, and the one place that turns a snapshot into plain data for the control
socket's `snapshot` method and plain data back into the same type on the client side (the TUI, scripts).

Beside the record types (probes/records.py: Event.to_dict / from_dict) because both sides use it, and the TUI may
import the probes but not the agent's server side. pydantic's TypeAdapter does both directions straight from the
stdlib dataclasses in probes/<room>/snapshot.py, so no second copy of the schema is kept in step. Encoding dumps in
python mode: dict keys stay ints and the server's json.dumps writes them as JSON strings, which decoding reads
back as ints. The agent's own "agent" snapshot (agent/health.py) is a TypedDict of plain data and crosses as it
is, as does any source without a type here.
"""
from __future__ import annotations

import functools
from typing import Any

from pydantic import TypeAdapter, ValidationError

from gpusleuth.probes.cuda.snapshot import CudaSnapshot
from gpusleuth.probes.engines.snapshot import EnginesSnapshot
from gpusleuth.probes.gpu.snapshot import GpuSnapshot
from gpusleuth.probes.kernel.snapshot import SchedSnapshot, SyscallSnapshot
from gpusleuth.probes.net.snapshot import NetSnapshot
from gpusleuth.probes.nvtx.snapshot import NvtxSnapshot
from gpusleuth.probes.otlp.snapshot import OtlpSnapshot
from gpusleuth.probes.spans.snapshot import SpansSnapshot

SNAPSHOT_TYPES: dict[str, type] = {"gpu": GpuSnapshot, "net": NetSnapshot, "syscalls": SyscallSnapshot,
                                   "sched": SchedSnapshot, "spans": SpansSnapshot, "cuda": CudaSnapshot,
                                   "otlp": OtlpSnapshot, "engines": EnginesSnapshot,
                                   "nvtx": NvtxSnapshot}


class SnapshotMismatch(ValueError):
    """A snapshot from the agent does not fit this side's type: agent and client are of different versions."""


@functools.cache
def _adapter(source: str) -> TypeAdapter:
    return TypeAdapter(SNAPSHOT_TYPES[source])  # built once per source: building costs milliseconds


def encode(source: str, snapshot: Any) -> Any:
    """`source`'s snapshot object as dicts, lists and scalars (what json.dumps takes)."""
    if source not in SNAPSHOT_TYPES:
        return snapshot
    return _adapter(source).dump_python(snapshot)


def decode(source: str, data: Any) -> Any:
    """The snapshot object `encode` was given, from its JSON-decoded form. Raises SnapshotMismatch naming the
    field when the data does not fit the type."""
    if source not in SNAPSHOT_TYPES:
        return data
    try:
        return _adapter(source).validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or source
        raise SnapshotMismatch(f"the agent's {source} snapshot does not fit this client ({where}: {err['msg']}); "
                               "use the gpusleuth version the agent runs") from None


def encode_snapshots(snapshots: dict[str, Any]) -> dict[str, Any]:
    """{source: snapshot object} -> {source: plain data}, the `snapshot` method's answer."""
    return {source: encode(source, snap) for source, snap in snapshots.items()}


def decode_snapshots(data: dict[str, Any]) -> dict[str, Any]:
    """The `snapshot` method's answer -> {source: snapshot object}."""
    return {source: decode(source, value) for source, value in data.items()}
