"""Traffic roles run inside a testbed namespace (testbed.py): `python -m gpusleuth.probes.net.traffic ROLE ...`.

The TCP sink, the UDP background sender, the burst sender, the bulk sender, and a holder of the net probe. Each
role prints one JSON line when done (testbed.wait_line reads it).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import sys
import time
from pathlib import Path

from gpusleuth.probes.net.testbed import ADDR_B, TCP_PORT, UDP_BURST_PORT, UDP_PORT

UDP_SEGMENT, UDP_PAYLOAD = 103, 1472  # UDP GSO: one write becomes many 1514-byte frames
SIOCOUTQ = 0x5411  # bytes not yet acknowledged by the peer (TIOCOUTQ)
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # like SO_SNDBUF/SO_RCVBUF but past [wr]mem_max (CAP_NET_ADMIN)


def role_sink(args: argparse.Namespace) -> None:
    """Accept TCP connections and discard everything; also drain a UDP port. Runs until killed."""
    import selectors
    sel = selectors.DefaultSelector()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    lsock.bind(("0.0.0.0", TCP_PORT))
    lsock.listen(16)
    sel.register(lsock, selectors.EVENT_READ, "accept")
    udp = []
    for port in (UDP_PORT, UDP_BURST_PORT):
        usock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        usock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        usock.bind(("0.0.0.0", port))
        sel.register(usock, selectors.EVENT_READ, "drain")
        udp.append(usock)
    print(json.dumps({"ready": True}), flush=True)
    buf = bytearray(1 << 20)
    while True:
        for key, _ in sel.select():
            if key.data == "accept":
                conn, _ = lsock.accept()
                sel.register(conn, selectors.EVENT_READ, "drain")
            elif key.fileobj.recv_into(buf) == 0 and key.fileobj not in udp:
                sel.unregister(key.fileobj)
                key.fileobj.close()


def role_background(args: argparse.Namespace) -> None:
    """UDP datagrams of `size` bytes paced to `mbps` for `seconds` (absolute deadlines, so no drift)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"b" * args.size
    period_ns = int(args.size * 8 / (args.mbps * 1e6) * 1e9)
    t0 = time.monotonic_ns()
    n = 0
    end = t0 + int(args.seconds * 1e9)
    due = t0
    while (now := time.monotonic_ns()) < end:
        if now < due:
            time.sleep((due - now) / 1e9)
        elif now - due > 2 * period_ns:
            due = now  # preempted: skip the missed slots instead of catching up in a burst of our own
        sock.sendto(payload, (args.dst, UDP_PORT))
        n += 1
        due += period_ns
    print(json.dumps({"datagrams": n, "payload_bytes": n * args.size}), flush=True)


def _connect(sndbuf: int = 16 << 20) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, sndbuf)  # past wmem_max: one write, no wait
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(100):
        try:
            sock.connect((ADDR_B, TCP_PORT))
            return sock
        except ConnectionRefusedError:
            time.sleep(0.05)
    raise RuntimeError("sink never listened")


def _wait_acked(sock: socket.socket, timeout_s: float = 5.0) -> None:
    import fcntl
    deadline = time.monotonic() + timeout_s
    buf = bytearray(4)
    while time.monotonic() < deadline:
        fcntl.ioctl(sock.fileno(), SIOCOUTQ, buf)
        if struct.unpack("i", buf)[0] == 0:
            return
        time.sleep(0.0002)
    raise RuntimeError("data never acknowledged")


def _udp_gso_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 16 << 20)
    sock.setsockopt(socket.SOL_UDP, UDP_SEGMENT, UDP_PAYLOAD)
    sock.connect((ADDR_B, UDP_BURST_PORT))
    return sock


def _send_udp_gso(sock: socket.socket, data: bytes) -> None:
    """Send `data` as UDP datagrams of UDP_PAYLOAD bytes, 44 per GSO write (about 64 KB per syscall)."""
    view = memoryview(data)
    step = UDP_PAYLOAD * 44
    for off in range(0, len(data), step):
        sock.send(view[off:off + step])


def _tx_bytes(ifname: str) -> int:
    # /sys shows the namespace sysfs was mounted in; `ip netns exec` remounts it for this namespace.
    return int(Path(f"/sys/class/net/{ifname}/statistics/tx_bytes").read_text())


def role_bursts(args: argparse.Namespace) -> None:
    """After a warm-up, send `count` bursts of `size` bytes in single writes, `gap_ms` apart; report each burst's
    own start/end timestamps (CLOCK_MONOTONIC) and the interface's tx byte delta around it."""
    try:  # other work on a small shared box must not preempt a burst halfway (it would really split it)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except OSError:
        pass
    if args.proto == "udp":
        sock = _udp_gso_socket()
        send = lambda buf: _send_udp_gso(sock, buf)  # noqa: E731
        wait = lambda: None  # noqa: E731
    else:
        sock = _connect()
        send, wait = sock.sendall, lambda: _wait_acked(sock)  # noqa: E731
    for _ in range(10):  # TCP: open the windows so a burst leaves in one go (harmless for UDP)
        send(b"w" * args.size)
        wait()
        time.sleep(0.005)
    if args.wait_go:  # let the test start its probe after the warm-up, so only the bursts are seen
        print(json.dumps({"warm": True}), flush=True)
        sys.stdin.readline()
    data = b"x" * args.size
    rng = random.Random(args.seed)
    bursts = []
    t_next = time.monotonic_ns() + int(args.gap_ms * 1e6)
    for _ in range(args.count):
        while time.monotonic_ns() < t_next:
            time.sleep(max(0.0, (t_next - time.monotonic_ns()) / 1e9 - 0.0005))
        b0 = _tx_bytes(args.ifname)
        t0 = time.monotonic_ns()
        send(data)
        t1 = time.monotonic_ns()
        wait()
        t2 = time.monotonic_ns()
        bursts.append({"start_ns": t0, "sent_ns": t1, "acked_ns": t2, "if_bytes": _tx_bytes(args.ifname) - b0})
        t_next = t0 + int((args.gap_ms + rng.uniform(0, args.jitter_ms)) * 1e6)
    sock.close()
    print(json.dumps({"bursts": bursts, "pid": os.getpid()}), flush=True)


def role_bulk(args: argparse.Namespace) -> None:
    """Send as fast as possible for `seconds`; report bytes sent and the achieved rate."""
    sock = _connect(4 << 20)
    chunk = b"z" * (256 << 10)
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < args.seconds:
        sent += sock.send(chunk)
    _wait_acked(sock, 30.0)
    elapsed = time.monotonic() - t0
    sock.close()
    print(json.dumps({"bytes": sent, "seconds": elapsed, "gbps": sent * 8 / elapsed / 1e9}), flush=True)


def role_hold_probe(args: argparse.Namespace) -> None:
    """Start the net probe on one interface of a namespace and sit there (another agent, or one to kill -9)."""
    from gpusleuth.probes.net.probe import NetConfig, NetProbe
    probe = NetProbe(NetConfig(netns=args.netns, interfaces=[args.ifname], state_dir=args.state_dir,
                               is_tcp_enabled=False))
    probe.start()
    print(json.dumps({"started": True, "pid": os.getpid()}), flush=True)
    sys.stdin.readline()
    probe.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="role", required=True)
    sub.add_parser("sink")
    p = sub.add_parser("background")
    p.add_argument("--mbps", type=float, default=10.0)
    p.add_argument("--size", type=int, default=1250)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--dst", default=ADDR_B)
    p = sub.add_parser("bursts")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--size", type=int, default=1_500_000)
    p.add_argument("--gap-ms", type=float, default=200.0)
    p.add_argument("--ifname", required=True)
    p.add_argument("--wait-go", action="store_true")
    p.add_argument("--proto", choices=("udp", "tcp"), default="udp")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="add a uniform random 0..jitter to each gap")
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("bulk")
    p.add_argument("--seconds", type=float, default=2.0)
    p = sub.add_parser("hold_probe")
    p.add_argument("--netns", required=True)
    p.add_argument("--ifname", required=True)
    p.add_argument("--state-dir", required=True)
    args = parser.parse_args()
    roles = {"sink": role_sink, "background": role_background, "bursts": role_bursts, "bulk": role_bulk,
             "hold_probe": role_hold_probe}
    roles[args.role](args)


if __name__ == "__main__":
    main()
