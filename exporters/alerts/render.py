"""Rendering the rule groups to Prometheus rule files (YAML), one file per source."""
from __future__ import annotations

from pathlib import Path

import yaml

from gpusleuth.exporters.alerts import agent_health, engine, gpu, incidents, net, slo
from gpusleuth.exporters.alerts.model import Group
from gpusleuth.exporters.alerts.params import AlertParams

HEADER = ("# Rendered by `python -m gpusleuth.exporters.alerts` from exporters/alerts/{source}.py; edit the spec or\n"
          "# re-render with your parameters (README: Alerts and runbooks) rather than editing this file.\n")
MODULES = {"slo": slo, "engine": engine, "agent": agent_health, "gpu": gpu, "net": net, "incidents": incidents}


def groups(p: AlertParams) -> list[Group]:
    """Every rule group, with parameters `p`."""
    return [m.group(p) for m in MODULES.values()]


def file_name(group: Group) -> str:
    return f"{group.name}.rules.yml"


def render_group(group: Group, p: AlertParams) -> str:
    """The text of one rule file."""
    module = MODULES[group.source].__name__.rsplit(".", 1)[-1]
    body = yaml.safe_dump({"groups": [group.as_dict(p)]}, sort_keys=False, width=120, allow_unicode=True)
    return HEADER.format(source=module) + body


def render_all(p: AlertParams) -> dict[str, str]:
    """{file name: text} of every rule file."""
    return {file_name(g): render_group(g, p) for g in groups(p)}


def prometheus_rule(p: AlertParams, namespace: str = "gpusleuth") -> str:
    """A prometheus-operator PrometheusRule holding every group (agent/deploy/prometheusrule.yaml)."""
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "gpusleuth", "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "gpusleuth-agent", "release": "prometheus"}},
            "spec": {"groups": [g.as_dict(p) for g in groups(p)]}}
    head = ("# Rendered by `python -m gpusleuth.exporters.alerts --prometheus-rule PATH` from exporters/alerts/: the\n"
            "# rule files of exporters/alerts/*.rules.yml for the prometheus-operator (re-render with your\n"
            "# parameters).\n")
    return head + yaml.safe_dump(rule, sort_keys=False, width=120, allow_unicode=True)


def write(p: AlertParams, out: Path) -> list[Path]:
    """Write every rule file into `out` (created); returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_all(p).items():
        path = out / name
        path.write_text(text)
        paths.append(path)
    return paths
