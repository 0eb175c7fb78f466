"""Config validation and the store's bounds and drop accounting."""
from __future__ import annotations

import pytest

from gpusleuth.agent.config import from_mapping, load
from gpusleuth.probes.config import ConfigError
from gpusleuth.agent.store import Store
from gpusleuth.probes.records import Event, Sample


def test_defaults_are_valid_and_documented_values():
    cfg = from_mapping({})
    assert cfg.exporter.address == ("127.0.0.1", 9464)
    assert cfg.recorder.flush_interval_s == 5.0
    assert cfg.control.socket == "/run/gpusleuth/agent.sock"
    assert set(cfg.enabled_probes) == {"syscalls", "sched", "net", "gpu", "spans", "engines", "nvtx"}


@pytest.mark.parametrize("data,key,fragment", [
    ({"store": {"memory_cap_mb": 2}}, "store.memory_cap_mb", "out of range"),
    ({"watch": {"pids": "1"}}, "watch.pids", "expected list of integer"),
    ({"watch": {"pids": [0]}}, "watch.pids[0]", "out of range"),
    ({"agent": {"log_level": "loud"}}, "agent.log_level", "not one of"),
    ({"recorder": {"total_cap_mb": 32, "segment_max_mb": 64}}, "recorder.total_cap_mb", "segment_max_mb"),
    ({"recorder": {"is_enabled": 1}}, "recorder.is_enabled", "expected boolean"),
    ({"probes": {"nope": {}}}, "probes.nope", "unknown probe"),
])
def test_errors_name_the_key(data, key, fragment):
    with pytest.raises(ConfigError) as err:
        from_mapping(data)
    assert err.value.key == key
    assert fragment in str(err.value)


def test_bad_toml_is_reported(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text("[store\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(path)


def test_store_bounds_and_counts_drops_only_for_unrecorded():
    store = Store(memory_cap_bytes=1)  # the floor: 1024 records per kind
    store.add([Sample("s", i, 1.0) for i in range(1500)])
    st = store.stats()
    assert st["samples"] == 1024 and st["samples_evicted"] == 476 and st["samples_dropped"] == 0
    store.start_recording()
    samples, _, cursor = store.unrecorded()
    assert len(samples) == 1024 and samples[0].t_ns == 476
    store.add([Sample("s", 2000 + i, 1.0) for i in range(10)])
    assert store.stats()["samples_dropped"] == 10  # evicted before the recorder confirmed them
    store.mark_recorded(cursor)


def test_events_overlap_query():
    store = Store()
    store.add(events=[Event("a", "x", 0, 10), Event("b", "x", 20, 30, pid=7), Event("a", "x", 40, 50)])
    assert [e.kind for e in store.events(5, 25)] == ["a", "b"]
    assert [e.start_ns for e in store.events(kinds=["a"])] == [0, 40]
    assert [e.start_ns for e in store.events(pid=7)] == [20]
