"""Step spans on CUDA (skipped elsewhere): the GPU is named as NVML names it, and each step carries the GPU time of
an earlier step from CUDA events, for eager and CUDA-graph steps alike. Figures are printed (run with -s).
"""
from __future__ import annotations

import os
import socket
import statistics
import sys
import threading
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpusleuth.engine.config import EngineConfig, preset  # noqa: E402
from gpusleuth.engine.engine import LLMEngine  # noqa: E402
from gpusleuth.engine.runner import ModelRunner  # noqa: E402
from gpusleuth.engine.sequence import SamplingParams  # noqa: E402
from gpusleuth.engine.spans import SpanEmitter  # noqa: E402
from gpusleuth.engine.tokenizer import load_tokenizer  # noqa: E402
from gpusleuth.probes.spans import wire  # noqa: E402

STOP = b"stop"  # the test's own datagram: everything the engine sent is in
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")]


def _steps(tmp_path, is_graphs: bool) -> list[wire.Span]:
    path = str(tmp_path / f"spans-{is_graphs}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(120)
    cfg = preset("llama3-1b")
    ecfg = EngineConfig(device="cuda", max_num_seqs=8, max_num_batched_tokens=512, max_model_len=1024,
                        num_gpu_blocks=256, is_cuda_graphs=is_graphs)
    runner = ModelRunner(cfg, ecfg, torch.device("cuda", 0))
    runner.init_kv_cache(runner.suggest_num_blocks())
    engine = LLMEngine(runner, load_tokenizer(cfg), emitter=SpanEmitter(0, path))
    spans: list[wire.Span] = []
    reader = threading.Thread(target=_read, args=(sock, spans))  # drained while sent: the queue holds ~10 datagrams
    reader.start()
    engine.generate([[3 + i] * 64 for i in range(4)], SamplingParams(max_tokens=40, temperature=0.0,
                                                                      is_ignore_eos=True))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(STOP, path)
    reader.join()
    sock.close()
    os.unlink(path)
    steps = [s for s in spans if s.phase == "step"]
    assert len(steps) == engine.num_steps and engine.emitter.num_dropped == 0
    return steps


def _read(sock: socket.socket, spans: list[wire.Span]) -> None:
    while (data := sock.recv(wire.MAX_DATAGRAM)) != STOP:
        spans += wire.decode(data)[1]


@pytest.mark.parametrize("is_graphs", [False, True])
def test_step_spans_name_the_gpu_and_carry_gpu_time(tmp_path, is_graphs):
    import pynvml

    steps = _steps(tmp_path, is_graphs)
    pynvml.nvmlInit()
    try:
        uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(0))
    finally:
        pynvml.nvmlShutdown()
    uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    assert {s.attrs["gpu_index"] for s in steps} == {0}
    if not visible:  # else CUDA's ordinal 0 need not be NVML's index 0
        assert {s.attrs["gpu_uuid"] for s in steps} == {uuid}
    timed = [s for s in steps if "gpu_ms" in s.attrs]
    by_id = {s.attrs["step_id"]: s for s in steps}
    assert len(timed) >= len(steps) - 2, f"only {len(timed)} of {len(steps)} steps carry an earlier step's GPU time"
    for s in timed:
        earlier = by_id[s.attrs["gpu_step"]]
        assert s.attrs["gpu_step"] <= s.attrs["step_id"]
        assert 0 < s.attrs["gpu_ms"] <= (earlier.end_ns - earlier.start_ns) / 1e6 + 0.5  # within its own wall time
    decode = [s.attrs["gpu_ms"] for s in timed if s.attrs["num_prefill"] == 0]
    walls = [(by_id[s.attrs["gpu_step"]].end_ns - by_id[s.attrs["gpu_step"]].start_ns) / 1e6 for s in timed
             if s.attrs["num_prefill"] == 0]
    print(f"FIGURE graphs={is_graphs}: {len(timed)}/{len(steps)} steps timed, decode gpu_ms median "
          f"{statistics.median(decode):.3f} vs wall {statistics.median(walls):.3f} ms; uuid {uuid}")
