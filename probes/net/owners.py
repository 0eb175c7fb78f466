"""Which process owns a flow: /proc socket tables matched by 5-tuple, socket inode to pid via /proc/<pid>/fd.

Path taken (status says so): a procfs scan, limited to processes in the probe's network namespace, when flows seen
in hot bins first appear (every poll) and again when a burst is reported, at most once per poll, so its cost
(reading every process's fd table) is paid per poll with new hot flows, not per packet. Owners are cached by
5-tuple, so a flow keeps its owner after the process exits; a socket that opens, bursts and closes within one
poll has no owner (pid 0).

Not psutil.net_connections(): it reads the socket tables of the caller's own network namespace, while the probe may
watch another one (`probes.net.netns`); here the tables are read through a process inside the watched namespace.
"""
from __future__ import annotations

import ipaddress
import os
import struct
import time
from dataclasses import dataclass, field

from gpusleuth.probes.kernel.proc_info import comm_of

_TABLES = {6: ("tcp", "tcp6"), 17: ("udp", "udp6")}


@dataclass(slots=True, frozen=True)
class Owner:
    pid: int
    comm: str


def netns_inode(netns: str) -> int:
    """Inode identifying the namespace (`/var/run/netns/<name>`, or our own when empty)."""
    return os.stat(f"/var/run/netns/{netns}" if netns else "/proc/self/ns/net").st_ino


def _parse_addr(hexaddr: str) -> tuple[str, int]:
    """'0100007F:1F90' -> ('127.0.0.1', 8080); /proc prints the address as host-order 32-bit words."""
    host, port = hexaddr.split(":")
    raw = bytes.fromhex(host)
    words = [struct.pack("=I", struct.unpack(">I", raw[i:i + 4])[0]) for i in range(0, len(raw), 4)]
    packed = b"".join(words)
    ip = ipaddress.IPv4Address(packed) if len(packed) == 4 else ipaddress.IPv6Address(packed)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def _read_table(pid: int, table: str) -> list[tuple[str, int, str, int, int]]:
    """(local ip, local port, remote ip, remote port, inode) rows of /proc/<pid>/net/<table>."""
    rows = []
    try:
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                parts = line.split()
                lip, lport = _parse_addr(parts[1])
                rip, rport = _parse_addr(parts[2])
                rows.append((lip, lport, rip, rport, int(parts[9])))
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return rows


@dataclass(slots=True)
class _Scan:
    inode_pid: dict[int, int] = field(default_factory=dict)
    sockets: dict[int, list[tuple[str, int, str, int, int]]] = field(default_factory=dict)  # proto -> rows


def _scan(ns_ino: int) -> _Scan:
    scan = _Scan()
    reader = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != ns_ino:
                continue
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        reader = reader or pid
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                scan.inode_pid.setdefault(int(target[8:-1]), pid)
    if reader:
        for proto, tables in _TABLES.items():
            scan.sockets[proto] = [row for t in tables for row in _read_table(reader, t)]
    return scan


class OwnerResolver:
    """Resolve flows to owning processes in one namespace: one /proc scan per `begin()` at most, and a cache by
    5-tuple so a flow keeps its owner after the process exits (a sender that quits right after its last burst)."""

    def __init__(self, netns: str, ttl_s: float = 300.0) -> None:
        self.ns_ino = netns_inode(netns)
        self.ttl_ns = int(ttl_s * 1e9)
        self._scan: _Scan | None = None
        self._cache: dict[tuple, tuple[Owner, int]] = {}

    def begin(self) -> None:
        """Forget the previous scan and long-unused cache entries (call once per poll)."""
        self._scan = None
        horizon = time.monotonic_ns() - self.ttl_ns
        for key in [k for k, (_, t) in self._cache.items() if t < horizon]:
            del self._cache[key]

    def owner(self, proto: int, local: str, lport: int, remote: str, rport: int) -> Owner | None:
        """The process holding the socket for this flow (local = this host's side), if one can be found."""
        if proto not in _TABLES:
            return None
        key = (proto, local, lport, remote, rport)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache[key] = (hit[0], time.monotonic_ns())
            return hit[0]
        if self._scan is None:
            self._scan = _scan(self.ns_ino)
        best = None
        for lip, lp, rip, rp, ino in self._scan.sockets.get(proto, ()):
            if lp != lport or ino == 0:
                continue
            if (rip, rp) == (remote, rport) and lip in (local, "0.0.0.0", "::"):
                best = ino
                break
            # An unconnected UDP socket (or a listener) bound to the port owns the flow if nothing exact does.
            if rp == 0 and lip in (local, "0.0.0.0", "::") and best is None:
                best = ino
        pid = self._scan.inode_pid.get(best) if best else None
        if not pid:
            return None  # misses are not cached: the owner may show up in a later scan
        found = Owner(pid, comm_of(pid))
        self._cache[key] = (found, time.monotonic_ns())
        return found
