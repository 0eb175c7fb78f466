"""Markdown runbooks, installed with the package: `path("cpu-contention")` is where that runbook's file is.

Each runbook's front matter names the alerts and diagnosis causes it answers and the checks `agent runbook` runs
(book.py loads and validates them, checks.py runs them).
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def path(name: str) -> Path:
    """The installed file of runbook `name` (without .md); KeyError naming the known ones if there is none."""
    file = HERE / f"{name}.md"
    if not file.is_file():
        known = sorted(p.stem for p in HERE.glob("*.md"))
        raise KeyError(f"no runbook {name!r}; known: {', '.join(known)}")
    return file
