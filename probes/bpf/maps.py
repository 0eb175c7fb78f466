"""Reading BPF maps from user space: read (and clear) in batches, set membership, per-CPU sums, comm strings."""
from __future__ import annotations

import ctypes
import errno
from typing import Any, Iterable


def drain(table: Any, chunk: int = 512) -> list[tuple[Any, Any]]:
    """Read and clear a BPF hash map with the kernel's batch lookup-and-delete, `chunk` entries at a time.

    bcc's own batch reader allocates buffers for the map's max_entries on every call (megabytes per poll for a
    64k-entry map); fixed small buffers keep an idle poll cheap. Falls back to lookup-then-delete on old kernels.
    """
    return _batch(table, chunk, is_delete=True)


def read_all(table: Any, chunk: int = 512) -> list[tuple[Any, Any]]:
    """Every entry of a BPF hash map, left in place (batch lookup, `chunk` entries at a time; as `drain`)."""
    return _batch(table, chunk, is_delete=False)


def _batch(table: Any, chunk: int, is_delete: bool) -> list[tuple[Any, Any]]:
    from bcc.libbcc import lib  # noqa: PLC0415

    call = lib.bpf_lookup_and_delete_batch if is_delete else lib.bpf_lookup_batch
    keys, values = (table.Key * chunk)(), (table.Leaf * chunk)()
    in_batch, out_batch, count = ctypes.c_uint32(0), ctypes.c_uint32(0), ctypes.c_uint32(0)
    out: list[tuple[Any, Any]] = []
    first = True
    while True:
        count.value = chunk
        res = call(table.map_fd, None if first else ctypes.byref(in_batch), ctypes.byref(out_batch),
                   ctypes.byref(keys), ctypes.byref(values), ctypes.byref(count))
        err = ctypes.get_errno()
        for i in range(count.value):
            out.append((_copy(keys[i]), _copy(values[i])))
        if res == 0:
            in_batch.value, first = out_batch.value, False
            continue
        if err == errno.ENOENT:  # the whole map has been walked
            return out
        if first and err in (errno.EINVAL, errno.ENOTSUPP if hasattr(errno, "ENOTSUPP") else 524):
            return out + [(_copy(k), _copy(v)) for k, v in (_drain_slow(table) if is_delete else table.items())]
        raise OSError(err, f"batch lookup{'-and-delete' if is_delete else ''} on BPF map {table.name!r} failed")


def _copy(item: Any) -> Any:
    """Detach an element from the reused buffer; scalars as plain ints (batch buffers give them so already, the
    slow path's table.items() as ctypes scalars)."""
    if isinstance(item, (int, float)):
        return item
    if isinstance(item, ctypes._SimpleCData):
        return item.value
    return type(item).from_buffer_copy(item)


def _drain_slow(table: Any) -> list[tuple[Any, Any]]:
    items = list(table.items())
    for key, _ in items:
        try:
            del table[key]
        except KeyError:
            pass
    return items


def set_members(table: Any, members: Iterable[int], key_type: Any = ctypes.c_uint32) -> None:
    """Make a BPF hash `table` (key -> u8) hold exactly `members`."""
    wanted = set(members)
    present = {k.value for k in table.keys()}
    for k in present - wanted:
        try:
            del table[key_type(k)]
        except KeyError:
            pass
    for k in wanted - present:
        table[key_type(k)] = ctypes.c_uint8(1)


def sum_percpu(value: Any) -> Any:
    """A per-CPU map value arrives as an array of per-CPU structs: add them up field by field."""
    if not isinstance(value, ctypes.Array):
        return value
    total = type(value[0])()
    for field_name, _ in total._fields_:
        setattr(total, field_name, sum(getattr(v, field_name) for v in value))
    return total


def comm_str(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")
