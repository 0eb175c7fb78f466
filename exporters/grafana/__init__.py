"""The Grafana dashboard for the agent and the engine: `dashboard.py` builds it, gpusleuth.json is the file to
import (Dashboards -> New -> Import), written by `python -m gpusleuth.exporters.grafana`."""
from __future__ import annotations

from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent / "gpusleuth.json"
