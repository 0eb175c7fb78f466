"""XID and other critical GPU events from an NVML event set, in their own thread.

nvmlEventSetWait blocks inside the driver, so it runs in a thread of its own with a bounded timeout
(`wait_ms`): stop() is prompt and the poll loop never waits on it (ctypes releases the GIL during the call).
Finished events go to a thread-safe deque that the probe drains each poll. An XID is held up to `match_s` for its
`NVRM: Xid` kernel-log line, which names the process (pid, comm) where the driver knows it.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Hashable

from gpusleuth.probes.gpu.fields import event_bits
from gpusleuth.probes.gpu.nvml import NA, GpuLost, Nvml
from gpusleuth.probes.gpu.xid_kmsg import KmsgReader, pci_key

log = logging.getLogger("gpusleuth.probes.gpu.probe")


@dataclass(slots=True)
class RawGpuEvent:
    """One NVML event as received: which GPU, what kind, its data (the XID code for kind 'xid')."""

    gpu: int
    kind: str
    data: int
    t_ns: int
    gi_id: int | None = None
    ci_id: int | None = None
    pid: int = 0
    comm: str = ""
    text: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)


def handle_key(handle: Any) -> Hashable:
    """A hashable identity for a device handle (ctypes pointers compare by object, not address)."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return handle


class XidWatcher:
    """Registers every GPU for critical events and waits for them in a background thread."""

    def __init__(self, lib: Nvml, devices: list[tuple[int, Any, str]], wait_ms: int = 500,
                 kmsg: KmsgReader | None = None, match_s: float = 1.0) -> None:
        self.lib = lib
        self.devices = devices  # (index, handle, pci_bus_id)
        self.wait_ms = wait_ms
        self.kmsg = kmsg
        self.match_ns = int(match_s * 1e9)
        self.registered: dict[int, list[str]] = {}  # gpu index -> event kinds registered
        self.error = ""
        self.waits = 0  # completed waits (event or timeout), to show the thread is alive
        self.lost_waits = 0
        self._bits = event_bits(lib.nv)
        self._by_handle = {handle_key(h): i for i, h, _ in devices}
        self._pci = {i: pci_key(bus) for i, _, bus in devices}
        self._out: deque[RawGpuEvent] = deque()
        self._awaiting: list[RawGpuEvent] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._set: Any = NA
        self._wait_fn = "nvmlEventSetWait_v2"

    def start(self) -> bool:
        """Create the event set, register what each GPU supports, start the thread. False (with `error`) if none."""
        self._set = self.lib.query("nvmlEventSetCreate")
        if self._set is NA:
            self.error = "nvmlEventSetCreate failed"
            return False
        wanted = sum(self._bits)
        xid_bit = next(bit for bit, name in self._bits.items() if name == "xid")
        for index, handle, _ in self.devices:
            try:
                supported = self.lib.query("nvmlDeviceGetSupportedEventTypes", handle)
                mask = wanted & (0 if supported is NA else int(supported))
                # if the driver refuses the combination, XIDs alone are what matters most
                for attempt in (mask, mask & xid_bit):
                    if attempt and self.lib.query("nvmlDeviceRegisterEvents", handle, attempt, self._set) is not NA:
                        self.registered[index] = [name for bit, name in self._bits.items() if attempt & bit]
                        break
            except GpuLost:
                continue  # the poll loop reports it
        if not self.registered:
            self.error = "no GPU supports NVML critical-event registration"
            self._free()
            return False
        self._wait_fn = "nvmlEventSetWait_v2" if hasattr(self.lib.nv, "nvmlEventSetWait_v2") else "nvmlEventSetWait"
        self._thread = threading.Thread(target=self._run, name="gpusleuth-gpu-xid", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.lib.query(self._wait_fn, self._set, self.wait_ms, no_data=None)
            except GpuLost:
                # a GPU of the set fell off; the poll loop finds which. Do not spin on the error.
                self.lost_waits += 1
                self._stop.wait(self.wait_ms / 1000)
                data = None
            self.waits += 1
            if data is NA:  # an unexpected NVML error: back off rather than spin
                self._stop.wait(self.wait_ms / 1000)
            elif data is not None:
                self._receive(data)
            self._match_kmsg()

    def _receive(self, data: Any) -> None:
        index = self.lib.query("nvmlDeviceGetIndex", data.device)
        if index is NA:
            index = self._by_handle.get(handle_key(data.device), -1)
        kind = self._bits.get(int(data.eventType), f"event_0x{int(data.eventType):x}")
        gi, ci = getattr(data, "gpuInstanceId", 0xFFFFFFFF), getattr(data, "computeInstanceId", 0xFFFFFFFF)
        ev = RawGpuEvent(int(index), kind, int(data.eventData), time.monotonic_ns(),
                         None if gi == 0xFFFFFFFF else int(gi), None if ci == 0xFFFFFFFF else int(ci))
        if kind == "xid" and self.kmsg is not None:
            self._awaiting.append(ev)
        else:
            self._out.append(ev)

    def _match_kmsg(self) -> None:
        if self.kmsg is None:
            return
        self.kmsg.read_new()  # every loop, so each record is read soon after the kernel wrote it
        if not self._awaiting:
            return
        now = time.monotonic_ns()
        still = []
        for ev in self._awaiting:
            # kmsg stamps with the kernel's local clock, close to but not exactly CLOCK_MONOTONIC: allow 5 s
            rec = self.kmsg.find(self._pci.get(ev.gpu), ev.data, ev.t_ns - max(self.match_ns, 5_000_000_000))
            if rec is not None:
                ev.pid, ev.comm, ev.text = rec.pid, rec.comm, rec.text
            if rec is not None or now - ev.t_ns >= self.match_ns:
                self._out.append(ev)
            else:
                still.append(ev)
        self._awaiting = still

    def drain(self) -> list[RawGpuEvent]:
        """Events finished since the last drain (called from the poll thread)."""
        out = []
        while self._out:
            out.append(self._out.popleft())
        return out

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop within about one wait_ms; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.wait_ms / 1000 + 2.0)
            if self._thread.is_alive():
                log.warning("XID thread did not stop within %d ms; leaving it (daemon)", self.wait_ms + 2000)
                return  # freeing the set under a waiting thread would be unsafe
            self._thread = None
        for ev in self._awaiting:  # publish what still waited for its kernel-log line
            self._out.append(ev)
        self._awaiting = []
        self._free()

    def _free(self) -> None:
        if self._set is not NA:
            self.lib.query("nvmlEventSetFree", self._set)
            self._set = NA
