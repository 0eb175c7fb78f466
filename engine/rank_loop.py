"""The step loop of ranks other than 0: run every step rank 0 broadcasts, until it sends None.

The loop runs on a thread of its own named `gs-step-r<N>` while the main thread (`gs-engine-r<N>`) waits for it, so
on every rank the thread in the step spans' `tid` is a step thread (probes/procname.py). Each step is an NVTX range
and a step span (diagnosis contract §1: thread, GPU, batch shape, an earlier step's GPU time; the request ids are
rank 0's, joined by `step_id`), and the process's garbage collections go out with the steps.
"""
from __future__ import annotations

import threading
import time

import torch
import torch.distributed as dist

from gpusleuth.engine.batch import StepInput
from gpusleuth.engine.gc_spans import GcWatch
from gpusleuth.engine.runner import ModelRunner
from gpusleuth.engine.spans import Nvtx, SpanEmitter
from gpusleuth.engine.step_channel import open_channel
from gpusleuth.engine.step_timing import GpuIdentity, GpuStepTimer, gpu_identity
from gpusleuth.probes import procname


def worker_loop(runner: ModelRunner, control, is_spans: bool) -> None:
    """Run this rank's steps on its step thread until rank 0 sends None; re-raises what the loop raised."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            _step_loop(runner, control, gc_watch)
        except BaseException as exc:  # handed to the main thread, which owns the process's exit
            failed.append(exc)

    gc_watch = GcWatch().install() if is_spans else None
    thread = threading.Thread(target=run, name=f"gpusleuth-step-r{runner.rank}")
    try:
        thread.start()
        thread.join()
    finally:
        if gc_watch is not None:
            gc_watch.uninstall()
    if failed:
        raise failed[0]


def _step_loop(runner: ModelRunner, control, gc_watch: GcWatch | None) -> None:
    procname.set_thread_name(procname.rank_name(procname.STEP, runner.rank))
    if runner.device.type == "cuda":
        torch.cuda.set_device(runner.device)  # the current device is per thread
    emitter = SpanEmitter(runner.rank, is_enabled=gc_watch is not None, gc_watch=gc_watch)
    nvtx, timer, gpu = Nvtx(runner.device.type == "cuda"), GpuStepTimer(runner.device), gpu_identity(runner.device)
    channel = open_channel(control, runner.rank, dist.get_world_size())
    tid = threading.get_native_id()
    try:
        while (inp := channel.recv()) is not None:
            start = time.monotonic_ns()
            nvtx.push(f"step {inp.step_id}")
            timer.start(inp.step_id)
            runner.execute(inp)
            timer.stop()
            if runner.device.type == "cuda":
                torch.cuda.synchronize(runner.device)  # the span covers the GPU work of the step, as on rank 0
            nvtx.pop()
            if emitter.is_enabled:
                emitter.add("step", "step", f"step-{inp.step_id}", start, time.monotonic_ns(), inp.num_tokens,
                            **step_attrs(inp, tid, gpu, timer))
                emitter.flush()
    finally:
        emitter.close()
        channel.close()


def step_attrs(inp: StepInput, tid: int, gpu: GpuIdentity, timer: GpuStepTimer) -> dict:
    """A rank's step span attributes (batch_size included) from the step's inputs."""
    num_prefill_tokens = inp.num_tokens - inp.num_decode
    num_prefill = inp.prefill_cu_seqlens.numel() - 1 if num_prefill_tokens else 0
    attrs = {"batch_size": inp.num_decode + num_prefill, "tid": tid, "gpu_index": gpu.index, "gpu_uuid": gpu.uuid,
             "num_prefill": num_prefill, "num_prefill_tokens": num_prefill_tokens, "num_decode": inp.num_decode,
             "step_id": inp.step_id}
    done = timer.take_done()
    if done is not None:
        attrs["gpu_step"], attrs["gpu_ms"] = done
    return attrs
