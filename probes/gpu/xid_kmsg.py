"""The kernel log's view of an XID: NVML's event carries only the code, the driver's `NVRM: Xid` line in /dev/kmsg also
names the process (pid, name) for application faults (XID 13, 31, 43, ...). We read new kmsg records without
blocking and keep the recent Xid lines so the XID watcher can fill in the pid.

Example line: `NVRM: Xid (PCI:0000:3b:00): 31, pid=2879, name=python3, Ch 00000008, intr 10000000. MMU Fault: ...`
"""
from __future__ import annotations

import errno
import logging
import os
import re
import time
from collections import deque
from dataclasses import dataclass

log = logging.getLogger("gpusleuth.probes.gpu.probe")

_XID = re.compile(r"NVRM: Xid \(PCI:(?P<pci>[0-9a-fA-F]+:[0-9a-fA-F]+:[0-9a-fA-F]+)(?:\.\d)?\): (?P<code>\d+)"
                  r"(?:, pid=(?P<pid>'?<unknown>'?|\d+))?(?:, name=(?P<name>[^,]*))?(?:, (?P<text>.*))?")


@dataclass(slots=True, frozen=True)
class KmsgXid:
    pci: tuple[int, int, int]  # (domain, bus, device)
    code: int
    pid: int
    comm: str
    text: str
    t_ns: int  # the record's kernel timestamp (monotonic since boot), else when we read it


def pci_key(bus_id: str) -> tuple[int, int, int] | None:
    """'00000000:3B:00.0' or '0000:3b:00' -> (0, 0x3b, 0); None if it is not a PCI address."""
    parts = bus_id.split(".")[0].split(":")
    if len(parts) != 3:
        return None
    try:
        return int(parts[0], 16), int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        return None


def parse_line(line: str, read_ns: int = 0) -> KmsgXid | None:
    """A KmsgXid from one kmsg record ('prio,seq,ts_us,flags;message') or a bare message; None if not an Xid."""
    t_ns = read_ns
    head, sep, message = line.partition(";")
    if sep and "NVRM" not in head:
        fields = head.split(",")
        if len(fields) >= 3 and fields[2].isdigit():
            t_ns = int(fields[2]) * 1000
    else:
        message = line
    m = _XID.search(message)
    if not m:
        return None
    pci = pci_key(m.group("pci"))
    if pci is None:
        return None
    pid_s = m.group("pid") or ""
    return KmsgXid(pci, int(m.group("code")), int(pid_s) if pid_s.isdigit() else 0,
                   (m.group("name") or "").strip().strip("'") if pid_s.isdigit() else "",
                   (m.group("text") or "").strip(), t_ns)


class KmsgReader:
    """Reads new records from /dev/kmsg (or any file in that format) without blocking."""

    def __init__(self, path: str = "/dev/kmsg", keep: int = 64) -> None:
        self.path = path
        self.recent: deque[KmsgXid] = deque(maxlen=keep)
        self._fd: int | None = None
        self._partial = b""
        self.error = ""

    def open(self) -> bool:
        """Start at the end of the log (only new lines matter). False, with `error` set, when it cannot be read."""
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError as exc:
            self.error = f"cannot read {self.path}: {exc.strerror} (XID pids will be 0)"
            self.close()
            return False
        return True

    def read_new(self) -> int:
        """Read what arrived since the last call; returns how many Xid lines were added to `recent`."""
        if self._fd is None:
            return 0
        added = 0
        for _ in range(1024):  # bounded: a flood of kernel messages must not hold the XID thread
            try:
                chunk = os.read(self._fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records were overwritten before we read them; carry on
                    continue
                self.error = f"reading {self.path}: {exc.strerror}"
                break
            if not chunk:
                break
            added += self._consume(chunk)
        return added

    def _consume(self, chunk: bytes) -> int:
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # /dev/kmsg gives whole records; a plain file may split one
        now = time.monotonic_ns()
        added = 0
        for raw in lines:
            xid = parse_line(raw.decode(errors="replace"), now)
            if xid is not None:
                self.recent.append(xid)
                added += 1
        return added

    def find(self, pci: tuple[int, int, int] | None, code: int, since_ns: int) -> KmsgXid | None:
        """The newest recent Xid line for this GPU and code read at or after since_ns."""
        for rec in reversed(self.recent):
            if rec.pci == pci and rec.code == code and rec.t_ns >= since_ns:
                return rec
        return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
