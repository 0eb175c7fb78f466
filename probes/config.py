"""Config validation every component shares (agent sections, probe configs, the engine): one error type naming
the key to fix, and range / choice checks used in the config dataclasses' `__post_init__`."""
from __future__ import annotations

import typing


class ConfigError(ValueError):
    """A user-fixable configuration problem; `key` is the dotted key to fix."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


def check_range(key: str, value: float, lo: float | None = None, hi: float | None = None) -> None:
    """Raise ConfigError unless lo <= value <= hi (bounds inclusive, None = open)."""
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ConfigError(key, f"{value!r} is out of range; allowed {lo_s} .. {hi_s}")


def check_choice(key: str, value: str, choices: typing.Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(key, f"{value!r} is not one of {', '.join(choices)}")
