"""Fixtures for tests/gpu/test_gpu_*.py: skip cleanly without a GPU, nvidia-smi readings, a real GpuProbe, and
helper processes (a torch GEMM load, a process that holds GPU memory). Imports only what the GPU hosts have.

gpusleuth must be importable: installed, or, on an uninstalled checkout (the GPU hosts), through
benchmarks/gpu_session.sh or `source benchmarks/checkout_env.sh`."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import pytest


def _skip_reason() -> str:
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as exc:
        return f"no usable NVML here ({exc})"
    if count == 0:
        return "NVML sees no GPU"
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi is not on PATH (needed as the reference)"
    return ""


@pytest.fixture(scope="session")
def gpu_count() -> int:
    reason = _skip_reason()
    if reason:
        pytest.skip(f"needs an NVIDIA GPU: {reason}")
    return len(smi(["uuid"]))


def smi(fields: list[str]) -> list[dict[str, str]]:
    """One row per GPU of `nvidia-smi --query-gpu=<fields>`, values as printed (no units)."""
    out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [dict(zip(fields, (v.strip() for v in line.split(",")))) for line in out.strip().splitlines()]


def smi_number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


@pytest.fixture
def make_probe():
    """Factory for started GpuProbes on the real NVML; all are stopped after the test."""
    from gpusleuth.probes.gpu.probe import GpuConfig, GpuProbe
    probes = []

    def make(**cfg):
        cfg.setdefault("is_kmsg_enabled", True)
        probe = GpuProbe(GpuConfig(**cfg))
        probe.start()
        probes.append(probe)
        return probe
    yield make
    for probe in probes:
        probe.stop()


def poll_for(probe, seconds: float, interval_s: float = 0.1) -> list:
    """Poll like the agent (fixed cadence) for `seconds`; returns [(t_ns, PollResult)]."""
    out, next_at = [], time.monotonic()
    end = next_at + seconds
    while time.monotonic() < end:
        out.append((time.monotonic_ns(), probe.poll(time.monotonic_ns())))
        next_at += interval_s
        time.sleep(max(0.0, next_at - time.monotonic()))
    return out


GEMM = """
import sys, time, torch
dev = torch.device(f"cuda:{int(sys.argv[1])}")
a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
for _ in range(3):
    a @ b
torch.cuda.synchronize(dev)
print("ready", flush=True)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    for _ in range(20):
        c = a @ b
    torch.cuda.synchronize(dev)
"""

HOLD = """
import sys, time, torch
x = torch.empty(int(sys.argv[2]) << 20, dtype=torch.uint8, device=f"cuda:{int(sys.argv[1])}")
x.fill_(1)
torch.cuda.synchronize()
print("ready", flush=True)
time.sleep(float(sys.argv[3]))
"""


@contextmanager
def helper_process(code: str, *args: object, timeout_s: float = 120.0) -> Iterator[subprocess.Popen]:
    """Run a torch helper in its own process; yields once it printed 'ready'."""
    pytest.importorskip("torch", reason="torch is needed to load the GPU")
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready":
            proc.kill()
            pytest.fail(f"GPU helper did not start (exit {proc.wait(timeout_s)})")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="session")
def gpu_tools(gpu_count):
    """The helpers above, as a fixture (test modules here must not import conftest by name)."""
    from types import SimpleNamespace
    return SimpleNamespace(smi=smi, number=smi_number, poll_for=poll_for, process=helper_process, GEMM=GEMM,
                           HOLD=HOLD, count=gpu_count)
