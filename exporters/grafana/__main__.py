"""`python -m gpusleuth.exporters.grafana [PATH]`: write the dashboard JSON (default: the shipped file)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from gpusleuth.exporters.grafana import DASHBOARD
from gpusleuth.exporters.grafana.dashboard import dashboard


def render() -> str:
    """The dashboard file's text."""
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DASHBOARD
    path.write_text(render())
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
