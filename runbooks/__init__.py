"""Markdown runbooks, installed with the package: `path("cpu-runqueue-delay")` is where that runbook's file is."""
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
