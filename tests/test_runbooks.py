"""Runbooks: every one validates, every alert and every diagnosis cause resolves to one that answers it, a check
naming an unknown metric, method or parameter is refused with the runbook and the check named, and `agent
runbook` runs the checks of a real recording (tests/fixtures/tui_recording: an engine beside a CPU hog)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpusleuth.agent.cli.runbook import vocabulary
from gpusleuth.agent.diagnosis import causes as diagnosis_causes
from gpusleuth.exporters.alerts import incidents as incident_alerts
from gpusleuth.exporters.alerts.params import AlertParams
from gpusleuth.exporters.alerts.render import groups
from gpusleuth.runbooks.book import RunbookError, load_all, parse

RECORDING = Path(__file__).parent / "fixtures" / "tui_recording"
AGENT = str(Path(sys.executable).parent / "agent")
PARAMS = AlertParams()


@pytest.fixture(scope="module")
def books():
    return {b.id: b for b in load_all(vocabulary())}


def _runbook_of(url: str, labels: dict[str, str]) -> str:
    stem = url.removeprefix(PARAMS.runbook_base_url + "/").removesuffix(".md")
    if "{{" in stem:  # the one templated URL: reReplaceAll "_" "-" $labels.cause
        assert stem == '{{ reReplaceAll "_" "-" $labels.cause }}', stem
        stem = labels["cause"].replace("_", "-")
    return stem


def test_every_alert_resolves_to_a_runbook_that_answers_it(books):
    for group in groups(PARAMS):
        for alert in group.alerts:
            url = alert.rule(PARAMS)["annotations"]["runbook_url"]
            if alert.name == "GpusleuthIncidentsRecurring":
                for cause in diagnosis_causes.CAUSES:
                    assert cause in books[_runbook_of(url, {"cause": cause})].causes
                continue
            stem = _runbook_of(url, {})
            assert stem in books, f"{alert.name}: no runbook {stem}"
            assert alert.name in books[stem].alerts, f"{stem}.md does not list {alert.name} in alerts:"


def test_every_runbook_alert_exists_in_the_rules(books):
    alerts = {a.name for g in groups(PARAMS) for a in g.alerts}
    listed = {a for b in books.values() for a in b.alerts}
    assert listed <= alerts, listed - alerts


def test_every_cause_has_its_runbook_and_an_incident_alert(books):
    assert tuple(incident_alerts.CAUSES) == diagnosis_causes.CAUSES  # the contract's list, in its order
    for cause in diagnosis_causes.CAUSES:
        stem = diagnosis_causes.runbook_name(cause)
        assert Path(diagnosis_causes.runbook_path(cause)).is_file()
        assert books[stem].causes == [cause]
        assert incident_alerts.alert_name(cause) in books[stem].alerts


def _runbook_with(tmp_path: Path, check: dict) -> Path:
    path = tmp_path / "drill.md"
    meta = {"id": "drill", "title": "a drill", "checks": [check]}
    path.write_text("---\n" + yaml.safe_dump(meta) + "---\n# drill\n")
    return path


GOOD = {"name": "retransmits", "promql": "rate(gpusleuth_net_tcp_retransmit_segments_total[5m])",
        "fault_if": "> 0", "next": "look at the peer"}


@pytest.mark.parametrize("change, message", [
    ({"promql": "rate(gpusleuth_tcp_retransmits_total[5m])"}, "unknown metric 'gpusleuth_tcp_retransmits_total'"),
    ({"promql": "rate(gpusleuth_net_bytes_total[5m]"}, "PromQL does not parse"),
    ({"promql": None, "control": "incidnets"}, "unknown control method 'incidnets'"),
    ({"promql": None, "control": "events", "params": {"kind": ["offcpu"]}}, "takes no parameter 'kind'"),
    ({"promql": None, "control": "status", "window": "5m"}, "takes no time window"),
    ({"promql": None, "control": "events", "window": "5 minutes"}, "is not a duration"),
    ({"next": None}, "needs 'next'"),
    ({"fault_if": "above 3"}, "fault_if 'above 3'"),
    ({"figure": "p99"}, "figure 'p99'"),
    ({"control": "events"}, "exactly one of"),
])
def test_an_invalid_check_names_the_runbook_and_the_check(tmp_path, change, message):
    check = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(RunbookError) as err:
        parse(_runbook_with(tmp_path, check), vocabulary())
    assert "runbook drill.md, check 'retransmits'" in str(err.value) and message in str(err.value), str(err.value)


def test_a_valid_check_loads(tmp_path):
    book = parse(_runbook_with(tmp_path, GOOD), vocabulary())
    assert book.checks[0].source == "promql" and book.checks[0].is_fault(0.5) and not book.checks[0].is_fault(0)


def _runbook_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AGENT, "runbook", *args], capture_output=True, text=True, timeout=120)


def test_runbook_on_a_recording_confirms_the_cpu_hog():
    """The fixture recording ran the engine beside a CPU hog: the run-queue check confirms it with a figure."""
    res = _runbook_cli("cpu-contention", "--recording", str(RECORDING), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    checks = {c["name"]: c for c in out["checks"]}
    runq = checks["longest run-queue wait of a watched thread in the last 5 min"]
    assert runq["status"] == "fail" and runq["confirms_fault"] and runq["figure"] > 20, runq
    assert runq["next"] and runq["unit"] == "ms"
    promql = checks["share of time a watched thread waited runnable (last minute)"]
    assert promql["status"] == "skip" and "--prometheus" in promql["detail"]
    text = _runbook_cli("cpu-contention", "--recording", str(RECORDING))
    assert "FAIL  longest run-queue wait" in text.stdout and "next: " in text.stdout


def test_runbook_resolves_an_alert_and_lists(books):
    res = _runbook_cli("--alert", "GpusleuthEngineNoSpans", "--recording", str(RECORDING), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["runbook"] == "engine-down"
    listing = json.loads(_runbook_cli("--list", "--json").stdout)
    assert {r["id"] for r in listing} == set(books)


def test_runbook_usage_errors_exit_2():
    assert _runbook_cli("no-such-runbook").returncode == 2
    bad = _runbook_cli("--alert", "GpusleuthNoSuchAlert")
    assert bad.returncode == 2 and "GpusleuthNoSuchAlert" in bad.stderr
