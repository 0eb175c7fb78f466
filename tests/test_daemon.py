"""agent/daemon.py: the start-up handshake between `agent start` and the daemon it forks."""
from __future__ import annotations

import os
import threading
import time

from gpusleuth.agent import daemon


def test_wait_ready_gives_up_when_the_daemon_says_nothing():
    read_fd, write_fd = os.pipe()  # the write end stays open: a daemon stuck in start-up
    try:
        t0 = time.monotonic()
        ok, detail = daemon.wait_ready(read_fd, timeout_s=0.3)
        waited = time.monotonic() - t0
    finally:
        os.close(write_fd)
    assert not ok and "no word from the agent within 0.3 s" in detail
    assert 0.25 < waited < 5


def test_wait_ready_reads_the_daemons_answer():
    read_fd, write_fd = os.pipe()
    threading.Timer(0.1, daemon.notify, (write_fd, "ok probes syscalls: ok")).start()
    assert daemon.wait_ready(read_fd, timeout_s=10) == (True, "probes syscalls: ok")
    read_fd, write_fd = os.pipe()
    daemon.notify(write_fd, "error: exporter.listen 127.0.0.1:1: Permission denied")
    assert daemon.wait_ready(read_fd, timeout_s=10) == (False, "exporter.listen 127.0.0.1:1: Permission denied")
