"""The processes a fault runs next to the engine, each with its own comm so the agent can name it:
`python actors.py ROLE [options]`. Every role pins itself where told, prints one JSON line {"ready": pid} once it
is doing its work, and runs until SIGTERM.

  spin        CPU hog: busy `--on-ms`, asleep `--off-ms` (0: always busy), SCHED_FIFO with `--fifo PRIO`
  udpflood    UDP datagrams to `--dst`:`--port` (GSO batches), `--pps` paced or as fast as it can (0)
  fsyncstorm  write `--mb` MiB into a file in `--dir` and fsync it, again and again
  sink        accept TCP on `--port` and discard (the bulk flow's far end)
  bulk        TCP to `--dst`:`--port`, paced to `--mbps` (0: as fast as it can)
  gemm        matrix multiplications on `--device` (GPU contention; needs torch)
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import sys
import time

PR_SET_NAME = 15
UDP_SEGMENT = 103  # UDP GSO: one sendto becomes many datagrams, so one core sends enough to load softirq


def set_comm(name: str) -> None:
    """The thread name the kernel (and every probe) reports for this process."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def ready() -> None:
    print(json.dumps({"ready": os.getpid()}), flush=True)


def role_spin(a: argparse.Namespace) -> None:
    if a.fifo:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(a.fifo))
    ready()
    on, off = a.on_ms / 1000.0, a.off_ms / 1000.0
    while True:
        end = time.perf_counter() + on
        while time.perf_counter() < end or not off:
            pass
        time.sleep(off)


def role_udpflood(a: argparse.Namespace) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    size, per_call = 64, 64  # small datagrams: the receive path's per-packet cost is what loads softirq
    sock.setsockopt(socket.SOL_UDP, UDP_SEGMENT, size)
    payload = b"x" * (size * per_call)
    ready()
    t0, n = time.monotonic(), 0
    while True:
        try:
            sock.sendto(payload, (a.dst, a.port))
        except OSError:
            time.sleep(0.001)  # ENOBUFS under a flood: back off a little
        n += per_call
        if a.pps:
            ahead = n / a.pps - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)


def role_fsyncstorm(a: argparse.Namespace) -> None:
    path = os.path.join(a.dir, f"storm-{os.getpid()}.bin")
    chunk = os.urandom(1 << 20)
    signal.signal(signal.SIGTERM, lambda *_: (os.path.exists(path) and os.unlink(path), sys.exit(0)))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    ready()
    while True:
        for i in range(a.mb):
            os.pwrite(fd, chunk, i << 20)
        os.fsync(fd)


def role_sink(a: argparse.Namespace) -> None:
    import selectors
    sel, lsock = selectors.DefaultSelector(), socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((a.dst, a.port))
    lsock.listen(8)
    sel.register(lsock, selectors.EVENT_READ)
    ready()
    buf = bytearray(1 << 20)
    while True:
        for key, _ in sel.select():
            if key.fileobj is lsock:
                sel.register(lsock.accept()[0], selectors.EVENT_READ)
            elif key.fileobj.recv_into(buf) == 0:
                sel.unregister(key.fileobj)
                key.fileobj.close()


def role_bulk(a: argparse.Namespace) -> None:
    sock = socket.create_connection((a.dst, a.port), timeout=10)
    chunk = b"b" * (64 << 10)
    ready()
    t0, sent = time.monotonic(), 0
    while True:
        sent += sock.send(chunk)
        if a.mbps:
            ahead = sent * 8 / (a.mbps * 1e6) - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)


def role_gemm(a: argparse.Namespace) -> None:
    import torch
    x = torch.randn(a.size, a.size, device=a.device, dtype=torch.bfloat16)
    ready()
    while True:
        for _ in range(16):
            x = (x @ x).clamp_(-1, 1)
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("role", choices=["spin", "udpflood", "fsyncstorm", "sink", "bulk", "gemm"])
    p.add_argument("--comm", default="")
    p.add_argument("--cpu", type=int, action="append", default=[], help="pin to this CPU (repeatable)")
    p.add_argument("--on-ms", type=float, default=10.0)
    p.add_argument("--off-ms", type=float, default=0.0)
    p.add_argument("--fifo", type=int, default=0)
    p.add_argument("--dst", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9)
    p.add_argument("--pps", type=float, default=0.0)
    p.add_argument("--mbps", type=float, default=0.0)
    p.add_argument("--dir", default="/tmp")
    p.add_argument("--mb", type=int, default=8)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--size", type=int, default=8192)
    a = p.parse_args()
    set_comm(a.comm or f"scn-{a.role}")
    if a.cpu:
        os.sched_setaffinity(0, a.cpu)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # fsyncstorm replaces it to remove its file first
    globals()[f"role_{a.role}"](a)


if __name__ == "__main__":
    main()
