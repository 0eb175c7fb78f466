"""Struct member offsets from the running kernel's BTF (/sys/kernel/btf/vmlinux), for the few skb fields the TCP
tracer reads beyond tracepoint arguments.

bcc compiles against header trees that may belong to a neighbouring kernel version, so struct sk_buff's layout
from headers cannot be trusted; BTF describes the kernel that is actually running. The offsets are passed to the
BPF program as #defines; without BTF those reads are skipped (status says so).
"""
from __future__ import annotations

import struct
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
_KIND_STRUCT, _KIND_UNION = 4, 5
_MODIFIERS = {8, 9, 10, 11, 18}  # typedef, volatile, const, restrict, type_tag: follow to the real type
# Bytes of kind-specific data after each 12-byte type record: fixed, or per member (vlen).
_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_PER_MEMBER = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}


class BtfError(Exception):
    """BTF is missing or does not describe what we need."""


class Btf:
    """A minimal reader: type records by id, names, and struct member lookup (through anonymous members)."""

    def __init__(self, data: bytes) -> None:
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
        if magic != 0xEB9F:
            raise BtfError("not little-endian BTF data")
        self._data = data
        self._strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
        self._types: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)]  # id -> (name_off, kind, vlen|kflag, pos)
        self._by_name: dict[str, list[int]] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info, _size = struct.unpack_from("<III", data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            self._types.append((name_off, kind, info, pos))
            if kind in (_KIND_STRUCT, _KIND_UNION) and name_off:
                self._by_name.setdefault(self._name(name_off), []).append(len(self._types) - 1)
            pos += 12 + _FIXED.get(kind, 0) + _PER_MEMBER.get(kind, 0) * vlen

    @classmethod
    def load(cls, path: Path = VMLINUX_BTF) -> "Btf":
        try:
            return cls(path.read_bytes())
        except OSError as exc:
            raise BtfError(f"cannot read {path}: {exc.strerror}") from None

    def _name(self, off: int) -> str:
        return self._strings[off: self._strings.index(b"\0", off)].decode()

    def _resolve(self, type_id: int) -> int:
        while self._types[type_id][1] in _MODIFIERS:
            type_id = struct.unpack_from("<I", self._data, self._types[type_id][3] + 8)[0]
        return type_id

    def size_of(self, type_id: int) -> int:
        type_id = self._resolve(type_id)
        kind, pos = self._types[type_id][1], self._types[type_id][3]
        if kind == 2:  # pointer
            return 8
        if kind == 3:  # array: element size * count
            elem, _index, count = struct.unpack_from("<III", self._data, pos + 12)
            return self.size_of(elem) * count
        return struct.unpack_from("<I", self._data, pos + 8)[0]

    def _member(self, type_id: int, name: str) -> tuple[int, int] | None:
        """(bit offset, member type id) of `name` inside struct/union `type_id`, searching anonymous members."""
        _name_off, kind, info, pos = self._types[type_id]
        kflag = info >> 31
        for i in range(info & 0xFFFF):
            m_name, m_type, m_off = struct.unpack_from("<III", self._data, pos + 12 + 12 * i)
            bit_off = m_off & 0xFFFFFF if kflag else m_off
            if m_name and self._name(m_name) == name:
                return bit_off, m_type
            inner = self._resolve(m_type)
            if not m_name and self._types[inner][1] in (_KIND_STRUCT, _KIND_UNION):
                found = self._member(inner, name)
                if found is not None:
                    return bit_off + found[0], found[1]
        return None

    def offset(self, struct_name: str, member: str) -> tuple[int, int]:
        """(byte offset, byte size) of `struct_name.member`; BtfError if either is unknown."""
        for type_id in self._by_name.get(struct_name, []):
            if self._types[type_id][1] != _KIND_STRUCT:
                continue
            found = self._member(type_id, member)
            if found is not None:
                bit_off, m_type = found
                if bit_off % 8:
                    raise BtfError(f"{struct_name}.{member} is a bitfield")
                return bit_off // 8, self.size_of(m_type)
        raise BtfError(f"struct {struct_name} has no member {member} in this kernel's BTF")


def _checked(btf: Btf, struct_name: str, fields: tuple[tuple[str, int], ...], prefix: str) -> dict[str, int]:
    defs = {}
    for field, want in fields:
        off, size = btf.offset(struct_name, field)
        if size != want:
            raise BtfError(f"{struct_name}.{field} is {size} bytes, expected {want}")
        defs[f"{prefix}{field.upper()}_OFF"] = off
    return defs


def sock_offsets(btf: Btf | None = None) -> dict[str, int]:
    """#defines for the raw-tracepoint programs: a socket's addresses, ports, family and protocol."""
    btf = btf or Btf.load()
    defs = _checked(btf, "sock_common", (("skc_daddr", 4), ("skc_rcv_saddr", 4), ("skc_dport", 2), ("skc_num", 2),
                                         ("skc_family", 2), ("skc_v6_daddr", 16), ("skc_v6_rcv_saddr", 16)), "")
    if btf.offset("sock", "__sk_common")[0] != 0:
        raise BtfError("struct sock does not start with its sock_common")
    defs.update(_checked(btf, "sock", (("sk_protocol", 2),), ""))
    defs.update(_checked(btf, "sk_buff", (("protocol", 2),), "SKB_"))
    return defs


def skb_offsets(btf: Btf | None = None) -> dict[str, int]:
    """#defines for tcp_trace.c: where sk_buff keeps its head, headers, length and TCP's segment count."""
    btf = btf or Btf.load()
    defs: dict[str, int] = {}
    for field, want in (("head", 8), ("len", 4), ("cb", 48), ("network_header", 2), ("transport_header", 2)):
        off, size = btf.offset("sk_buff", field)
        if size != want:
            raise BtfError(f"sk_buff.{field} is {size} bytes, expected {want}")
        defs[f"SKB_{field.upper()}_OFF"] = off
    off, size = btf.offset("tcp_skb_cb", "tcp_gso_segs")
    if size != 2:
        raise BtfError(f"tcp_skb_cb.tcp_gso_segs is {size} bytes, expected 2")
    defs["TCB_GSO_SEGS_OFF"] = off
    return defs


class ProgMisses:
    """Reads `recursion_misses` of loaded BPF programs (bpf_prog_info, offset from BTF): the events the kernel did
    not deliver to a program because it was already running on that CPU."""

    _SYS_BPF = {"x86_64": 321, "aarch64": 280}
    _OBJ_GET_INFO_BY_FD = 15

    def __init__(self, btf: Btf | None = None) -> None:
        import ctypes  # noqa: PLC0415
        import platform  # noqa: PLC0415
        btf = btf or Btf.load()
        self._off, _size = btf.offset("bpf_prog_info", "recursion_misses")
        self._info_len = btf.size_of(btf._by_name["bpf_prog_info"][0])
        self._nr = self._SYS_BPF.get(platform.machine())
        if self._nr is None:
            raise BtfError(f"no bpf syscall number known for {platform.machine()}")
        self._ctypes = ctypes
        self._libc = ctypes.CDLL(None, use_errno=True)

    def misses(self, prog_fd: int) -> int:
        ct = self._ctypes
        info = ct.create_string_buffer(self._info_len)
        attr = ct.create_string_buffer(16)  # bpf_fd u32, info_len u32, info u64
        struct.pack_into("<IIQ", attr, 0, prog_fd, self._info_len, ct.addressof(info))
        if self._libc.syscall(self._nr, self._OBJ_GET_INFO_BY_FD, attr, 16) != 0:
            return 0
        return struct.unpack_from("<Q", info.raw, self._off)[0]
