"""The span socket: a Unix datagram socket whose receive queue holds bursts.

A Unix datagram socket's queue is not bounded by SO_RCVBUF but by a datagram count, net.unix.max_dgram_qlen, read
once when the socket is created (10 on a stock kernel; systemd hosts set 512). At 10 an engine's step datagrams
overflow it in a few milliseconds of the agent not reading (a render, a GC pause), and the engine gets EAGAIN. As
root, the agent raises the setting for the instant it creates its socket and puts it back, so only this socket gets
the deeper queue; without root, the queue stays as the host set it, and the engines' backlog (engine/spans.py)
covers short stalls.
"""
from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

log = logging.getLogger(__name__)
QLEN_SYSCTL = Path("/proc/sys/net/unix/max_dgram_qlen")
WANTED_QLEN = 4096  # datagrams; with up to 150 spans each, seconds of a busy engine
RCVBUF_BYTES = 8 << 20
_sysctl_lock = threading.Lock()


def read_qlen() -> int | None:
    try:
        return int(QLEN_SYSCTL.read_text())
    except (OSError, ValueError):
        return None


def datagram_socket(wanted_qlen: int = WANTED_QLEN) -> tuple[socket.socket, int | None]:
    """A new AF_UNIX datagram socket and the queue length it got (None if unknown)."""
    with _sysctl_lock:
        host = read_qlen()
        raised = False
        if host is not None and host < wanted_qlen:
            try:
                QLEN_SYSCTL.write_text(str(wanted_qlen))
                raised = True
            except OSError as exc:
                log.info("span socket queue stays at %d datagrams (net.unix.max_dgram_qlen; %s)", host,
                         exc.strerror)
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        finally:
            if raised:
                QLEN_SYSCTL.write_text(str(host))
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, RCVBUF_BYTES)
            break
        except OSError:
            continue
    return sock, (wanted_qlen if raised else host)
