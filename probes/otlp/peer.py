"""Which local process is on the other end of a TCP connection to the intake, and which process a span's
resource names when the sender is not local (or not found).

psutil lists every TCP socket with its owner (it reads /proc/net/tcp{,6} and each process's fd table, which needs
root for other users' processes); that is a scan of the host, so a peer address is looked up once and cached:
OTLP exporters keep their connection open (gRPC) or reuse it (HTTP keep-alive).
"""
from __future__ import annotations

import ipaddress
import time
from typing import Any, Mapping

import psutil

CACHE_S = 300.0
PID_KEYS = ("process.pid", "vllm.process_id", "service.instance.id")  # resource attributes, most specific first


def _norm(ip: str) -> str:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def local_addresses() -> set[str]:
    """This host's own addresses (a connection from one of them comes from a local process)."""
    out = {"127.0.0.1", "::1"}
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            try:
                out.add(_norm(a.address))
            except ValueError:  # link-layer addresses
                continue
    return out


class PeerPids:
    """Peer (ip, port) of a connection to our `port` -> the local pid that owns it, or None (remote, or gone)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], tuple[int | None, float]] = {}
        self._local = local_addresses()
        self.scans = 0

    def lookup(self, ip: str, port: int, our_port: int) -> int | None:
        try:
            ip = _norm(ip)
        except ValueError:
            return None
        if ip not in self._local and not ipaddress.ip_address(ip).is_loopback:
            return None
        key = (ip, port)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[1] < CACHE_S and (hit[0] is None or psutil.pid_exists(hit[0])):
            return hit[0]
        pid = self._scan(ip, port, our_port)
        self._cache[key] = (pid, now)
        if len(self._cache) > 4096:
            self._cache.pop(next(iter(self._cache)))
        return pid

    def _scan(self, ip: str, port: int, our_port: int) -> int | None:
        self.scans += 1
        try:
            conns = psutil.net_connections(kind="tcp")
        except psutil.AccessDenied:  # not root: only our own processes' sockets are visible
            return None
        for c in conns:
            if c.pid and c.laddr and c.raddr and c.laddr.port == port and c.raddr.port == our_port:
                try:
                    if _norm(c.laddr.ip) == ip:
                        return c.pid
                except ValueError:
                    continue
        return None


def resource_pid(resource: Mapping[str, Any]) -> int | None:
    """The sending process as the span's resource names it (process.pid, vLLM's vllm.process_id, or a numeric
    service.instance.id)."""
    for key in PID_KEYS:
        value = resource.get(key)
        if isinstance(value, int) and value > 0:
            return value
        if isinstance(value, str) and value.isdigit() and int(value) > 0:
            return int(value)
    return None


def parse_grpc_peer(peer: str) -> tuple[str, int] | None:
    """grpc's context.peer(): "ipv4:127.0.0.1:43210", "ipv6:[::1]:43210" (None for unix sockets and the like)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host, _, port = rest.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None
