"""The NVML wrapper: errors become NA, unsupported calls are remembered, missing functions are logged once, a lost
GPU raises, and nvmlInit failures name the fix."""
from __future__ import annotations

import logging

import pytest
from fake_nvml import FakeNvml

from gpusleuth.probes.gpu.nvml import NA, GpuLost, Nvml, NvmlUnavailable, or_none


def _lib(fake: FakeNvml) -> Nvml:
    lib = Nvml(fake)
    lib.init()
    return lib


def test_value_passes_through_and_na_is_falsy_and_none_in_json():
    fake = FakeNvml(1)
    fake.gpus[0].power_mw = 123_456
    lib = _lib(fake)
    h = lib.query("nvmlDeviceGetHandleByIndex", 0)
    assert lib.query("nvmlDeviceGetPowerUsage", h) == 123_456
    assert not NA and or_none(NA) is None and or_none(0) == 0


def test_not_supported_is_na_and_remembered_per_key():
    fake = FakeNvml(2)
    fake.gpus[0].unsupported.add("nvmlDeviceGetPowerUsage")
    lib = _lib(fake)
    h0, h1 = (lib.query("nvmlDeviceGetHandleByIndex", i) for i in range(2))
    for _ in range(5):
        assert lib.query("nvmlDeviceGetPowerUsage", h0, key=(0, "power")) is NA
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 1  # never asked again for GPU 0
    assert lib.query("nvmlDeviceGetPowerUsage", h1, key=(1, "power")) == 70_000  # GPU 1 still asked
    assert lib.errors["nvmlDeviceGetPowerUsage:NotSupported"] == 1


def test_function_missing_from_binding_is_logged_once(caplog):
    fake = FakeNvml(1, absent=("nvmlDeviceGetPowerUsage",))
    lib = _lib(fake)
    h = lib.query("nvmlDeviceGetHandleByIndex", 0)
    with caplog.at_level(logging.WARNING, logger="gpusleuth.probes.gpu.probe"):
        assert lib.query("nvmlDeviceGetPowerUsage", h) is NA
        assert lib.query("nvmlDeviceGetPowerUsage", h) is NA
    assert [r.getMessage() for r in caplog.records].count(
        "NVML function nvmlDeviceGetPowerUsage is not in this nvidia-ml-py; its values are reported as not "
        "available") == 1
    assert lib.missing_functions == ["nvmlDeviceGetPowerUsage"]


def test_symbol_missing_from_driver_is_logged_once_and_not_retried(caplog):
    fake = FakeNvml(1, missing_symbols=("nvmlDeviceGetTotalEnergyConsumption",))
    lib = _lib(fake)
    h = lib.query("nvmlDeviceGetHandleByIndex", 0)
    with caplog.at_level(logging.WARNING, logger="gpusleuth.probes.gpu.probe"):
        for _ in range(3):
            assert lib.query("nvmlDeviceGetTotalEnergyConsumption", h, key=(0, "energy")) is NA
    assert sum("libnvidia-ml" in r.getMessage() for r in caplog.records) == 1
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1


def test_lost_gpu_raises_gpu_lost_not_na():
    fake = FakeNvml(1)
    lib = _lib(fake)
    h = lib.query("nvmlDeviceGetHandleByIndex", 0)
    fake.gpus[0].is_lost = True
    with pytest.raises(GpuLost, match="nvmlDeviceGetPowerUsage"):
        lib.query("nvmlDeviceGetPowerUsage", h)


def test_not_found_and_timeout_mean_no_data():
    fake = FakeNvml(1)
    lib = _lib(fake)
    h = lib.query("nvmlDeviceGetHandleByIndex", 0)
    assert lib.query("nvmlDeviceGetSamples", h, 1, 0, no_data=(None, [])) == (None, [])
    es = lib.query("nvmlEventSetCreate")
    assert lib.query("nvmlEventSetWait_v2", es, 10, no_data=None) is None
    assert not lib.errors  # neither is an error worth counting


def test_other_nvml_errors_are_na_and_counted():
    fake = FakeNvml(1)
    lib = _lib(fake)
    assert lib.query("nvmlDeviceGetHandleByIndex", 7) is NA  # INVALID_ARGUMENT
    assert lib.errors["nvmlDeviceGetHandleByIndex:NVMLError_InvalidArgument"] == 1


@pytest.mark.parametrize("code, words", [(12, "libnvidia-ml.so.1 not found"), (9, "driver is not loaded"),
                                         (4, "no permission"), (18, "versions differ")])
def test_init_failure_names_the_fix(code, words):
    lib = Nvml(FakeNvml(1, init_error=code))
    with pytest.raises(NvmlUnavailable, match=words):
        lib.init()
    assert not lib.is_initialized
    lib.shutdown()  # safe after a failed init


def test_shutdown_twice_is_safe():
    fake = FakeNvml(1)
    lib = _lib(fake)
    lib.shutdown()
    lib.shutdown()
    assert fake.calls["nvmlShutdown"] == 1
