"""The sched probe's optional parts: a kernel without one of their tracepoints runs the probe degraded, naming the
tracepoint, never stopped; a part switched off in the config is no degradation. The missing tracepoint is faked
(a kernel's tracepoints cannot be removed for a test): everything else loads into the real kernel."""
from __future__ import annotations

import pytest

from gpusleuth.probes import registry
from gpusleuth.probes.base import ProbeState
from gpusleuth.probes.bpf import host as bpf_host
from gpusleuth.probes.kernel.sched import SchedConfig, SchedProbe
from gpusleuth.probes.records import monotonic_ns


@pytest.fixture
def no_softirq_tracepoint(monkeypatch):
    real = bpf_host.tracepoint_exists
    monkeypatch.setattr(bpf_host, "tracepoint_exists",
                        lambda category, event: (category, event) != ("irq", "softirq_entry") and real(category, event))


def test_requirements_list_the_optional_tracepoints_and_stay_ready(no_softirq_tracepoint):
    reqs = {r.name: r for r in SchedProbe.requirements()}
    missing = reqs["tracepoint irq:softirq_entry"]
    assert not missing.is_met and missing.is_optional and "softirq load" in missing.detail
    assert not reqs["tracepoint sched:sched_switch"].is_optional
    report = registry.requirements_report(["sched"])["sched"]
    assert report["ready"] == all(r.is_met for r in reqs.values() if not r.is_optional)


@pytest.mark.root
def test_a_missing_tracepoint_degrades_and_names_it(no_softirq_tracepoint):
    probe = SchedProbe(SchedConfig())
    probe.start()
    try:
        status = probe.status()
        snap = probe.poll(monotonic_ns()).snapshot
        source = probe.source()
    finally:
        probe.stop()
    assert status.state is ProbeState.DEGRADED
    assert "irq:softirq_entry" in status.reason and "softirq load off" in status.reason
    assert snap.parts_off == [status.reason]
    assert "#define HAS_IRQ 0" in source and "#define HAS_CULPRITS 1" in source
    assert "culprits" in status.path and "irq" not in status.path


@pytest.mark.root
def test_a_part_switched_off_is_no_degradation():
    probe = SchedProbe(SchedConfig(has_irq=False, has_faults=False))
    probe.start()
    try:
        status = probe.status()
        snap = probe.poll(monotonic_ns()).snapshot
    finally:
        probe.stop()
    assert status.state is ProbeState.OK and not snap.parts_off
    assert "irq" not in status.path and "faults" not in status.path and "reclaim" in status.path
