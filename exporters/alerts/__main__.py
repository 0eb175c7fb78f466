"""`python -m gpusleuth.exporters.alerts --out DIR [--PARAM VALUE ...]`: render the rule files with your values."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from gpusleuth.exporters.alerts import HERE
from gpusleuth.exporters.alerts.params import AlertParams, ParamError
from gpusleuth.exporters.alerts.render import prometheus_rule, write


def main(argv: list[str] | None = None) -> int:
    """Render; exit 2 naming the flag when a parameter is out of range."""
    parser = argparse.ArgumentParser(prog="python -m gpusleuth.exporters.alerts", description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE, help=f"output folder (default {HERE})")
    parser.add_argument("--prometheus-rule", type=Path, metavar="PATH",
                        help="also write the PrometheusRule (prometheus-operator) holding every group to PATH")
    for f in dataclasses.fields(AlertParams):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                            help=f"(default {f.default!r})")
    args = vars(parser.parse_args(argv))
    out, rule_path = args.pop("out"), args.pop("prometheus_rule")
    try:
        params = AlertParams(**args)
    except ParamError as exc:
        print(f"alerts: {exc}", file=sys.stderr)
        return 2
    for path in write(params, out):
        print(path)
    if rule_path is not None:
        rule_path.write_text(prometheus_rule(params))
        print(rule_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
