"""Clock-event (throttle) intervals: while a GPU runs below its clocks for a reason other than idleness or a user
setting, that is one Event from when the reason set appeared to when it changed or cleared."""
from __future__ import annotations

from dataclasses import dataclass

from gpusleuth.probes.gpu.fields import NOT_THROTTLING, decode_reasons
from gpusleuth.probes.records import Event


@dataclass(slots=True)
class ThrottleTracker:
    gpu: int
    uuid: str
    mask: int = 0  # throttling bits of the open interval (0: none open)
    start_ns: int = 0

    def update(self, reasons: int | None, now_ns: int) -> list[Event]:
        """Feed the current reason bitmask (None: unknown); returns the intervals that just ended."""
        cur = 0 if reasons is None else reasons & ~NOT_THROTTLING
        if cur == self.mask:
            return []
        out = [self._close(now_ns)] if self.mask else []
        self.mask, self.start_ns = cur, now_ns
        return out

    def _close(self, now_ns: int) -> Event:
        return Event("gpu_throttle", "gpu", self.start_ns, now_ns,
                     attrs={"gpu": self.gpu, "uuid": self.uuid, "reasons": decode_reasons(self.mask),
                            "mask": self.mask})

    def close(self, now_ns: int) -> list[Event]:
        """End the open interval (probe stopping or GPU lost)."""
        out = [self._close(now_ns)] if self.mask else []
        self.mask = 0
        return out

    @property
    def open_since_ns(self) -> int | None:
        return self.start_ns if self.mask else None
