"""Every kernel variant the wrappers launch at Llama-3-8B shapes compiles for Hopper (sm_90) with Triton's own
toolchain on this CPU machine, and its machine code has the properties bandwidth needs.

Checked in the SASS: no local memory (register spills), 16-byte global loads and stores for the elementwise
kernels, tensor-core MMA and asynchronous global->shared copies (software pipelining) in the attention kernels,
shared memory within Hopper's 227 KB per block. Compiled by benchmarks/bench_kernels_sass.py.
"""

import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton", reason="triton is not installed (needs the gpusleuth[engine] extra, x86_64)")
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
if not all((BIN / tool).exists() for tool in ("ptxas", "cuobjdump", "nvdisasm")):
    pytest.skip("this triton wheel has no bundled NVIDIA toolchain (ptxas, cuobjdump, nvdisasm)",
                allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_kernels_sass as sass  # noqa: E402

HOPPER_MAX_SMEM = 227 * 1024
STREAMING = {"rms_norm", "add_rms_norm", "rms_norm_many_rows", "add_rms_norm_many_rows", "swiglu", "rope", "causal_softmax", "causal_softmax_loop"}
ATTENTION = {"paged_decode_split", "paged_decode_single", "paged_decode_fp32", "prefill", "paged_prefill"}
TRUE_FP32 = {"paged_decode_fp32"}  # float32 inputs use IEEE fp32 FMA on purpose (tf32 would miss 1e-5)


@pytest.fixture(scope="module")
def reports() -> dict[str, dict]:
    out = {}
    for label, rec in sass.llama_launches():
        kernel = sass.compile_for(rec, 90)
        out[label] = {"dynamic_shared_bytes": kernel.metadata.shared, **sass.machine_report(kernel)}
    return out


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
