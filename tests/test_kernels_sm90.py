"""Every kernel variant the wrappers launch at Llama-3-8B shapes compiles for Hopper (sm_90) with Triton's own
toolchain on this CPU machine, and its machine code has the properties bandwidth needs.

Checked in the SASS: no local memory (register spills), 16-byte global loads and stores for the elementwise
kernels, tensor-core MMA and asynchronous global->shared copies (software pipelining) in the attention kernels,
shared memory within Hopper's 227 KB per block. Compiled by benchmarks/bench_kernels_sass.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton", reason="triton is not installed (needs the gpusleuth[engine] extra, x86_64)")
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
if not all((BIN / tool).exists() for tool in ("ptxas", "cuobjdump", "nvdisasm")):
    pytest.skip("this triton wheel has no bundled NVIDIA toolchain (ptxas, cuobjdump, nvdisasm)",
                allow_module_level=True)

try:  # ahead-of-time compilation goes through triton internals of the version pinned here (3.9)
    from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: F401

    assert hasattr(JITFunction, "_pack_args")
except (ImportError, AssertionError):
    pytest.skip(f"ahead-of-time compile needs triton 3.9 internals, found {triton.__version__}",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
HOPPER_MAX_SMEM = 227 * 1024
STREAMING = {"rms_norm", "add_rms_norm", "rms_norm_many_rows", "add_rms_norm_many_rows", "swiglu", "rope",
             "causal_softmax", "causal_softmax_loop"}
ATTENTION = {"paged_decode_split", "paged_decode_single", "paged_decode_fp32", "prefill", "paged_prefill"}
TRUE_FP32 = {"paged_decode_fp32"}  # float32 inputs use IEEE fp32 FMA on purpose (tf32 would miss 1e-5)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, dict]:
    """Compile in a fresh process: interpreter runs earlier in this one leave triton.language patched."""
    out = tmp_path_factory.mktemp("sass") / "sass.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_kernels_sass.py"), "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return {r["kernel"]: r for r in json.loads(out.read_text())["kernels"]}


def test_every_variant_compiles_without_spills(reports):
    assert STREAMING | ATTENTION <= set(reports), f"missing variants: {STREAMING | ATTENTION - set(reports)}"
    for label, r in reports.items():
        assert r["local_bytes"] == 0 and not r["has_local_memory_ops"], f"{label} spills to local memory"
        assert r["dynamic_shared_bytes"] <= HOPPER_MAX_SMEM, f"{label} needs {r['dynamic_shared_bytes']} B smem"


def test_streaming_kernels_use_16_byte_accesses(reports):
    for label in STREAMING:
        r = reports[label]
        assert 128 in r["ldg_bits"] and r["stg_bits"] == [128], f"{label}: LDG {r['ldg_bits']} STG {r['stg_bits']}"
    for label in ("rms_norm", "add_rms_norm", "rms_norm_many_rows", "add_rms_norm_many_rows", "swiglu",
                  "causal_softmax"):
        assert reports[label]["ldg_bits"] == [128], f"{label} has narrow loads: {reports[label]['ldg_bits']}"


def test_attention_kernels_use_tensor_cores_and_async_copies(reports):
    for label in ATTENTION:
        r = reports[label]
        assert r["has_hmma"] != (label in TRUE_FP32), f"{label}: tensor cores {r['has_hmma']}"
        assert r["has_ldgsts"], f"{label} K/V loads are not pipelined through async copies"
