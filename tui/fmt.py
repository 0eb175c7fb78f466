"""Short, fixed-width text for numbers (durations, rates, sizes), wall-clock times and text sparklines."""
from __future__ import annotations

import time
from typing import Sequence

DASH = "—"
BLOCKS = " ▁▂▃▄▅▆▇█"


def dur_ns(ns: float | None) -> str:
    """812ns, 40µs, 12.3ms, 1.24s, 3m05s."""
    if ns is None:
        return DASH
    if ns < 1e3:
        return f"{ns:.0f}ns"
    if ns < 1e6:
        return f"{ns / 1e3:.0f}µs" if ns >= 1e4 else f"{ns / 1e3:.1f}µs"
    if ns < 1e9:
        return f"{ns / 1e6:.0f}ms" if ns >= 1e8 else f"{ns / 1e6:.1f}ms"
    if ns < 60e9:
        return f"{ns / 1e9:.2f}s"
    m, s = divmod(int(ns / 1e9), 60)
    return f"{m}m{s:02d}s"


def uptime(s: float) -> str:
    """42s, 3m05s, 2h03m, 3d04h."""
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def dur_s(s: float | None) -> str:
    return DASH if s is None else dur_ns(s * 1e9)


def pct(v: float | None, scale: float = 1.0) -> str:
    return DASH if v is None else f"{v * scale:.0f}%"


def num(v: float | None, digits: int = 0, unit: str = "") -> str:
    return DASH if v is None else f"{v:.{digits}f}{unit}"


def mib(v: float | None) -> str:
    """A MiB amount as 512M / 61.2G."""
    if v is None:
        return DASH
    return f"{v / 1024:.1f}G" if v >= 1024 else f"{v:.0f}M"


def bps(v: float | None) -> str:
    """Bits per second: 950b/s, 12.0Mb/s, 9.41Gb/s."""
    if v is None:
        return DASH
    for unit, div in (("Gb/s", 1e9), ("Mb/s", 1e6), ("kb/s", 1e3)):
        if v >= div:
            return f"{v / div:.2f}{unit}" if v < 10 * div else f"{v / div:.1f}{unit}"
    return f"{v:.0f}b/s"


def size(v: float | None) -> str:
    """Bytes as 512B, 1.5kB, 3.2MB (decimal, as link rates are)."""
    if v is None:
        return DASH
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.0f}B"


def clock(t_ns: int, wall_offset_ns: int, is_ms: bool = False) -> str:
    """Local wall-clock time of a monotonic timestamp."""
    wall = (t_ns + wall_offset_ns) / 1e9
    text = time.strftime("%H:%M:%S", time.localtime(wall))
    return f"{text}.{int(wall * 1000) % 1000:03d}" if is_ms else text


def ago(t_ns: int | None, now_ns: int) -> str:
    if t_ns is None:
        return DASH
    return f"{dur_ns(max(0, now_ns - t_ns))} ago"


def spark(points: Sequence[tuple[int, float]], end_ns: int, span_ns: int, width: int,
          lo: float | None = None, hi: float | None = None) -> str:
    """A `width`-character sparkline of (t_ns, value) points over (end_ns - span_ns, end_ns], mean per column.

    lo/hi fix the scale (e.g. 0..100 for percentages); otherwise it spans 0..max. Columns without points are
    blank, so a gap in the data shows as a gap.
    """
    if width <= 0:
        return ""
    sums = [0.0] * width
    counts = [0] * width
    start = end_ns - span_ns
    for t, v in points:
        if start < t <= end_ns:
            col = min(width - 1, int((t - start) * width / span_ns))
            sums[col] += v
            counts[col] += 1
    means = [s / n if n else None for s, n in zip(sums, counts)]
    known = [m for m in means if m is not None]
    if not known:
        return " " * width
    lo = 0.0 if lo is None else lo
    hi = max(known) if hi is None else hi
    rng = hi - lo
    out = []
    for m in means:
        if m is None:
            out.append(" ")
        elif rng <= 0:
            out.append(BLOCKS[1])
        else:
            level = round((min(max(m, lo), hi) - lo) / rng * (len(BLOCKS) - 2)) + 1
            out.append(BLOCKS[level])
    return "".join(out)


def trunc(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"
