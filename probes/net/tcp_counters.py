"""A counter map with a bounded number of keys: new keys beyond the bound are summed under OTHER.

Used for per-endpoint and per-process counts, whose key space an attacker (or a port scan) controls.
"""
from __future__ import annotations

OTHER = "(other)"


class BoundedCounter:
    """key -> cumulative count, at most `max_keys` keys plus OTHER."""

    def __init__(self, max_keys: int) -> None:
        assert max_keys >= 1, "max_keys must be positive"
        self.max_keys = max_keys
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int) -> None:
        if key in self.counts or len(self.counts) < self.max_keys:
            self.counts[key] = self.counts.get(key, 0) + n
        else:
            self.counts[OTHER] = self.counts.get(OTHER, 0) + n

    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, int]:
        return dict(self.counts)
