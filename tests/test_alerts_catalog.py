"""The metric catalogue (the vocabulary runbook checks are validated against) holds every family the exporters and
the engine build, with the right type: read from their sources, so a new family cannot stay unknown to
`agent runbook` (the live scrape of tests/test_alerts_e2e.py checks the names the rules and runbooks use)."""
from __future__ import annotations

import re
from pathlib import Path

from gpusleuth.exporters.alerts import catalog

ROOT = Path(__file__).resolve().parent.parent
KINDS = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram"}
# `XMetricFamily("name"` or `XMetricFamily(P + "name"` (P a module-level prefix), and prometheus_client's
# `Counter("name"` / `Histogram("name"` / hist("name" in the engine
FAMILY = re.compile(r'\b(Counter|Gauge|Histogram)(?:MetricFamily)?\(\s*(?:(\w+) \+ )?f?"([a-zA-Z_:][\w:{}]*)"')
PREFIX = re.compile(r'^(\w+) = "(\w+)"$', re.M)


def _families(path: Path) -> dict[str, str]:
    text = path.read_text()
    prefixes = dict(PREFIX.findall(text))
    out = {}
    for kind, prefix, name in FAMILY.findall(text):
        if "{" in name:  # f"gpusleuth_request_{m}_seconds": the catalogue expands these itself
            continue
        out[prefixes.get(prefix, "") + name] = KINDS[kind]
    return out


def test_every_exported_family_is_in_the_catalogue():
    found: dict[str, str] = {}
    for path in sorted((ROOT / "exporters").glob("*.py")):
        found |= _families(path)
    engine = _families(ROOT / "engine" / "metrics.py")
    engine |= {m: "histogram" for m in re.findall(r'hist\("([\w:]+)"', (ROOT / "engine" / "metrics.py").read_text())}
    found |= engine
    assert len(found) > 60, "the scan found too few families: the pattern no longer matches the exporters"
    known = catalog.families()
    assert {n: k for n, k in found.items() if known.get(n) != k} == {}
    # names built from tables (no family constructor beside them): every full gpusleuth_* literal is a family
    literals = {n for p in (ROOT / "exporters").glob("*.py")
                for n in re.findall(r'"(gpusleuth_[a-z0-9_]*[a-z0-9])"', p.read_text())}
    assert literals - set(known) == set()


def test_sample_names_expand_by_type():
    names = catalog.sample_names()
    assert {"gpusleuth_syscall_latency_seconds_bucket", "gpusleuth_slow_syscalls_total",
            "gpusleuth_agent_uptime_seconds", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "vllm:prompt_tokens_total",
            "vllm:time_to_first_token_seconds_count", "up"} <= names
    assert "gpusleuth_slow_syscalls" not in names and "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL_total" not in names
