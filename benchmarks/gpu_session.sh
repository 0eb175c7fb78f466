#!/usr/bin/env bash
# One batched session on a GPU host: the named stages in order, each with its own time limit and log, a failing
# stage recorded without stopping the others. Results (JSON, logs) go to RESULTS_DIR.
#   bash benchmarks/gpu_session.sh RESULTS_DIR STAGE [STAGE ...]
# Stages:
#   install     offline install from .gsbundle (made here by `agent bundle .gsbundle`) -> /opt/gpusleuth
#   nvml        tests/gpu/test_gpu_nvml.py (every GPU of the host sampled)
#   tp_tests    TP=N greedy tokens == TP=1, llama3-8b (N from $TP_TESTS, default "2 4")
#   tp_bench    benchmarks/bench_engine_tp.py, llama3-70b shapes (sizes from $TP_BENCH, default 4)
#   (GPUSLEUTH_ALLREDUCE=symm in the environment: small all-reduces through symmetric memory, see symm_allreduce.py)
#   serving     benchmarks/bench_engine_serving.py on the 70b 40-layer subset at each TP in $SERVE_TPS
#   overhead    benchmarks/bench_agent_overhead.py with the bundled agent at TP=$OVH_TP ($OVH_PRESET), which also
#               records what the agent holds (GPUs sampled, spans per rank, host events joined): stack_check.py
#   poll        benchmarks/bench_gpu_poll.py (1 GPU and all GPUs, nvidia-smi -lms 100 beside it)
#   profile     benchmarks/profile_decode_step.py (llama3-8b batch-1 decode, kernels and idle gaps; TPs in $PROFILE_TPS)
#   decode      benchmarks/bench_engine_decode.py (llama3-8b batch-1 decode vs the GEMV ceiling)
#   cuda        benchmarks/cuda_probe_check.py (after install: it runs the cuda probe in-process with the bundled
#               bcc): uprobe cost per hit (fake libraries and libcuda), idle cost, the torch N graphs / M syncs /
#               K copies check, eager engine launches per step vs the torch profiler and GEMM contention
#               ($CUDA_PRESET, default llama3-8b) -> $out/cuda/cuda_*.json
#   nvtx        tests/test_nvtx_injection.py (ranges from a C program and a torch.cuda.nvtx script reach the NVTX
#               intake through libgsnvtx.so, with torch's own NVTX here) and benchmarks/bench_nvtx.py --torch (ns
#               per range, C client and torch, injected vs not) -> $out/bench_nvtx.json; needs gcc and the nvtx3
#               headers (CUDA toolkit, or the nvidia-nvtx wheel carried in .whl/)
#   cuda_overhead  the same script's overhead stage: agent default probes vs default + cuda, interleaved, with
#               CUDA graphs and eager decode ($CUDA_PRESET; rounds $CUDA_ROUNDS, default 3)
# The checkout is not installed there: benchmarks/checkout_env.sh (sourced below) puts it on PYTHONPATH as
# `gpusleuth` and installs the wheels carried in .whl/ (git-ignored) under a temp folder. The engine needs
# prometheus_client, which GPU hosts often lack; on a machine with network, in the checkout, fetch the version
# the project's venv has (a pure-Python py3-none-any wheel, which pip accepts for any --platform):
#   v=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("prometheus-client"))')
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl "prometheus_client==$v"
# The agent's typed snapshots need pydantic too: the same command for pydantic, pydantic-core (a cp312 binary
# wheel: that is why --python-version/--platform are given), annotated-types and typing-inspection, each at the
# venv's version. The engine's HTTP server needs fastapi, starlette, uvicorn, h11, click, anyio, idna,
# annotated-doc, opentelemetry-api (fastapi's), jinja2, markupsafe and httptools (cp312 binaries, add
# --platform manylinux_2_28_x86_64) and typing-extensions (anyio wants >= 4.16, newer than some hosts have):
#   for n in fastapi starlette uvicorn h11 click anyio idna annotated-doc opentelemetry-api jinja2 markupsafe \
#            httptools typing-extensions; do
#       v=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$n'))")
#       python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#           --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .whl "$n==$v"
#   done
set -uo pipefail
out=${1:?usage: gpu_session.sh RESULTS_DIR STAGE...}
shift
mkdir -p "$out"
cd "$(dirname "$0")/.."
source benchmarks/checkout_env.sh
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
agent=/opt/gpusleuth/bin/agent
py=python3

run_stage() {  # name default_limit_s command...  (LIMIT_<name>=seconds overrides the limit)
    local name=$1 var="LIMIT_$1"
    local limit=${!var:-$2}
    shift 2
    local t0=$SECONDS
    echo "=== $name (limit ${limit}s): $*"
    timeout -k 10 "$limit" bash -c "$*" >"$out/$name.log" 2>&1  # stage functions are exported below
    local rc=$?
    echo "=== $name rc=$rc in $((SECONDS - t0))s"
    grep -E 'FIGURE|passed|failed|error|speedup|tok/s|round [0-9]|wrote|rc=|Error' "$out/$name.log" | tail -n 25
    echo "$name rc=$rc $((SECONDS - t0))s" >>"$out/stages.txt"
}

stage_install() { bash .gsbundle/install.sh; "$agent" probes; }
stage_nvml() { $py -m pytest -s -q -p no:cacheprovider tests/gpu/test_gpu_nvml.py; }
stage_tp_tests() {
    local ids=()
    for t in ${TP_TESTS:-2 4}; do ids+=("tests/gpu/test_engine_gpu.py::test_tp_equals_tp1[$t]"); done
    $py -m pytest -s -q -p no:cacheprovider "${ids[@]}"
}
stage_tp_bench() {
    $py benchmarks/bench_engine_tp.py --tp "${TP_BENCH:-4}" --repeats 2 --num-tokens 64 ${TP_BENCH_ARGS:-} \
        --out "$out/bench_engine_tp${GPUSLEUTH_ALLREDUCE:+_$GPUSLEUTH_ALLREDUCE}.json"
}
stage_serving() {
    for t in ${SERVE_TPS:-8 4 1}; do
        $py benchmarks/bench_engine_serving.py --preset llama3-70b --tp "$t" --engine-args "--override num_layers=40" \
            --num-requests "${SERVE_REQUESTS:-100}" --rates "${SERVE_RATES:-inf}" --skip-hf \
            --out "$out/serving_70b40_tp$t.json" || echo "serving tp $t failed"
    done
}
stage_overhead() {
    $py benchmarks/bench_agent_overhead.py --agent "$agent" --preset "${OVH_PRESET:-llama3-8b}" --tp "${OVH_TP:-1}" \
        --rounds "${OVH_ROUNDS:-5}" --expect-gpus "$ngpu" --out "$out/overhead.json"
}
stage_poll() { $py benchmarks/bench_gpu_poll.py --seconds "${POLL_SECONDS:-20}" --out "$out/bench_gpu_poll.json"; }
stage_profile() {
    for t in ${PROFILE_TPS:-1}; do
        $py benchmarks/profile_decode_step.py --tp "$t" --out "$out/profile_tp$t.json" || echo "profile tp $t failed"
    done
}
stage_decode() { $py benchmarks/bench_engine_decode.py --out "$out/bench_engine_decode.json"; }
cuda_check() {  # the in-process probe needs the bundled bcc's libraries; the workloads it starts get the original
    local root=/opt/gpusleuth/root
    GS_CHILD_LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" \
    LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu:$root/usr/lib/llvm-14/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    PYTHONPATH="$PYTHONPATH:/opt/gpusleuth/bcc-only:/opt/gpusleuth/lib" \
        $py benchmarks/cuda_probe_check.py "$out/cuda" --preset "${CUDA_PRESET:-llama3-8b}" "$@"
}
stage_cuda() { cuda_check --stages hit_cost,idle,torch,engine; }
stage_cuda_overhead() {
    $py benchmarks/cuda_probe_check.py "$out/cuda" --stages overhead --agent "$agent" \
        --preset "${CUDA_PRESET:-llama3-8b}" --overhead-rounds "${CUDA_ROUNDS:-3}"
}
stage_nvtx() {
    $py -m pytest -s -q -p no:cacheprovider tests/test_nvtx_injection.py
    $py benchmarks/bench_nvtx.py --torch --out "$out/bench_nvtx.json"
}

export out ngpu agent py
export -f stage_install stage_nvml stage_tp_tests stage_tp_bench stage_serving stage_overhead stage_poll \
    stage_profile stage_decode cuda_check stage_cuda stage_cuda_overhead stage_nvtx
echo "host: $(hostname), $ngpu GPU(s): $(nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | xargs)"
for s in "$@"; do
    case $s in
        install) run_stage install 180 stage_install ;;
        nvml) run_stage nvml 240 stage_nvml ;;
        tp_tests) run_stage tp_tests 420 stage_tp_tests ;;
        tp_bench) run_stage tp_bench 480 stage_tp_bench ;;
        serving) run_stage serving 560 stage_serving ;;
        overhead) run_stage overhead 560 stage_overhead ;;
        poll) run_stage poll 300 stage_poll ;;
        profile) run_stage profile 240 stage_profile ;;
        decode) run_stage decode 400 stage_decode ;;
        cuda) run_stage cuda 560 stage_cuda ;;
        cuda_overhead) run_stage cuda_overhead 560 stage_cuda_overhead ;;
        nvtx) run_stage nvtx 300 stage_nvtx ;;
        *) echo "unknown stage $s" >&2 ;;
    esac
done
