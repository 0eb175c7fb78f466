"""Prometheus alert rules for the agent and the engine, one group (and one file) per source.

The rule files beside this module are rendered from the rule specs (`slo.py`, `engine.py`, `agent_health.py`,
`gpu.py`, `net.py`, `incidents.py`) with the default parameters of `params.AlertParams`;
`python -m gpusleuth.exporters.alerts --out DIR --ttft-slo-seconds 0.5 ...` renders them with other values.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def shipped_rule_files() -> list[Path]:
    """The rendered rule files installed with the package (default parameters)."""
    return sorted(HERE.glob("*.rules.yml"))
