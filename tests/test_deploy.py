"""The Kubernetes manifests in agent/deploy/: valid against Kubernetes' own schemas (kubernetes-validate, strict,
offline), the PrometheusRule is the rule files (and promtool accepts it), the agent's config loads with the agent's
loader, and the privileges are exactly the documented ones."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gpusleuth.agent import config as config_mod
from gpusleuth.exporters.alerts.params import AlertParams
from gpusleuth.exporters.alerts.render import groups, prometheus_rule

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed (the test extra)")

DEPLOY = Path(__file__).resolve().parent.parent / "agent" / "deploy"
K8S_VERSION = "1.30.0"  # the oldest release whose schema has securityContext.appArmorProfile
OPERATOR_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}  # CRDs: kubernetes-validate has no schema


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _all_docs() -> list[dict]:
    return [d for f in sorted(DEPLOY.glob("*.yaml")) for d in _docs(f.name)]


def _daemonset() -> dict:
    return next(d for d in _docs("daemonset.yaml") if d["kind"] == "DaemonSet")


@pytest.mark.parametrize("doc", [d for d in _all_docs() if d["kind"] not in OPERATOR_KINDS],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_core_resources_validate_strictly(doc):
    kv.validate(doc, K8S_VERSION, strict=True)


def test_validation_catches_a_wrong_field():
    """kubernetes-validate really checks: a misspelt field of the DaemonSet fails strictly."""
    ds = _daemonset()
    ds["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kv.ValidationError):
        kv.validate(ds, K8S_VERSION, strict=True)


def test_operator_resources_select_the_agent():
    docs = {d["kind"]: d for d in _all_docs() if d["kind"] in OPERATOR_KINDS}
    assert set(docs) == OPERATOR_KINDS
    pod_labels = _daemonset()["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodMonitor", "ServiceMonitor"):
        spec = docs[kind]["spec"]
        assert docs[kind]["apiVersion"] == "monitoring.coreos.com/v1"
        assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
        assert pod_labels[spec["jobLabel"]] == AlertParams().agent_job  # job = what the rules select
        endpoints = spec.get("podMetricsEndpoints") or spec.get("endpoints")
        assert endpoints[0]["port"] == "metrics" and endpoints[0]["path"] == "/metrics"


def test_prometheus_rule_is_the_rule_files(tmp_path):
    shipped = (DEPLOY / "prometheusrule.yaml").read_text()
    assert shipped == prometheus_rule(AlertParams()), "re-render: python -m gpusleuth.exporters.alerts " \
                                                      "--prometheus-rule agent/deploy/prometheusrule.yaml"
    spec = yaml.safe_load(shipped)["spec"]
    assert [g["name"] for g in spec["groups"]] == [g.name for g in groups(AlertParams())]
    if shutil.which("promtool") is None:
        pytest.skip("promtool missing (Debian package prometheus)")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(spec))
    res = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_agent_config_loads_with_the_agents_loader(tmp_path):
    cm = next(d for d in _docs("daemonset.yaml") if d["kind"] == "ConfigMap")
    path = tmp_path / "agent.toml"
    path.write_text(cm["data"]["agent.toml"])
    cfg = config_mod.load(str(path), is_required=True)
    mounts = {m["mountPath"] for m in _daemonset()["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert cfg.exporter.listen == "0.0.0.0:9464"
    for used in (cfg.control.socket, cfg.probes["spans"].socket, cfg.agent.pid_file, cfg.recorder.directory + "/x"):
        assert any(used.startswith(m + "/") for m in mounts), f"{used} is on no mount"


def _documented_capabilities() -> set[str]:
    text = (DEPLOY / "README.md").read_text()
    return set(re.findall(r"^\| `([A-Z_]+)` \|", text, re.M))


def test_privileges_are_exactly_the_documented_ones():
    pod = _daemonset()["spec"]["template"]["spec"]
    sc = pod["containers"][0]["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["privileged"] and not sc["allowPrivilegeEscalation"]
    assert set(sc["capabilities"]["add"]) == _documented_capabilities()
    assert pod["hostPID"] and pod["hostNetwork"]
    paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert {"/sys/kernel/tracing", "/sys/kernel/btf", "/lib/modules", "/run/gpusleuth"} <= paths
    readme = (DEPLOY / "README.md").read_text()
    undocumented = [p for p in paths if f"`{p}`" not in readme and f"`{p}`," not in readme]
    assert not undocumented, f"host paths not in agent/deploy/README.md: {undocumented}"
