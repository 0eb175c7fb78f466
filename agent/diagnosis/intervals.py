"""Arithmetic on half-open time intervals [a, b) in nanoseconds: merge, total, intersect, subtract, clip.

Written here rather than taken from a library (portion, intervaltree) because the diagnosis needs five
list operations on a few dozen intervals per request; a dependency would not make them shorter.
"""
from __future__ import annotations

from typing import Iterable

Interval = tuple[int, int]


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping union of the non-empty intervals."""
    out: list[list[int]] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def total(intervals: Iterable[Interval]) -> int:
    """Length of the union."""
    return sum(b - a for a, b in merge(intervals))


def clip(a: int, b: int, lo: int, hi: int) -> int:
    """Length of [a, b) inside [lo, hi)."""
    return max(0, min(b, hi) - max(a, lo))


def intersect(xs: list[Interval], ys: list[Interval]) -> list[Interval]:
    """Intersection of two merged lists (as merge returns them)."""
    out, i, j = [], 0, 0
    while i < len(xs) and j < len(ys):
        a, b = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        if b > a:
            out.append((a, b))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(xs: list[Interval], ys: list[Interval]) -> list[Interval]:
    """xs minus ys (both merged)."""
    out, j = [], 0
    for a, b in xs:
        cur = a
        while j < len(ys) and ys[j][1] <= cur:
            j += 1
        k = j
        while k < len(ys) and ys[k][0] < b:
            if ys[k][0] > cur:
                out.append((cur, ys[k][0]))
            cur = max(cur, ys[k][1])
            k += 1
        if cur < b:
            out.append((cur, b))
    return out
