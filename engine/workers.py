"""Starting all tensor-parallel ranks from one command, and the loop of ranks other than 0.

Single host: the calling process is rank 0 and spawns ranks 1..tp-1 (torch.multiprocessing, "spawn"). Under
torchrun or SLURM (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT in the environment) each launched process is
one rank and nothing is spawned. Collectives of the model use NCCL on GPU and gloo on CPU; rank 0 sends each step's
inputs to the others through step_channel.py (shared memory on one host, else a gloo group). Ranks other than 0
call their main thread `gs-engine-r<N>` and run their steps in rank_loop.py.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

from gpusleuth.engine.config import EngineConfig, ModelSource
from gpusleuth.engine.faults import FaultConfig
from gpusleuth.engine.rank_loop import worker_loop
from gpusleuth.engine.runner import ModelRunner, resolve_device
from gpusleuth.engine.step_channel import open_channel
from gpusleuth.probes import procname

log = logging.getLogger("gpusleuth.engine")


@dataclass(slots=True)
class LaunchSpec:
    """Everything a rank needs to build its part of the engine (picklable: it is sent to spawned ranks)."""

    source: ModelSource = field(default_factory=ModelSource)
    engine: EngineConfig = field(default_factory=EngineConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    is_spans: bool = True
    master_addr: str = "127.0.0.1"
    master_port: int = 0
    timeout_s: float = 1800.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_rank() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) when launched by torchrun/SLURM, else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


def init_rank(spec: LaunchSpec, rank: int, world: int, local_rank: int, is_env: bool = False):
    """(device, control group) of this rank, with torch.distributed initialised when world > 1."""
    device = resolve_device(spec.engine, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world == 1:
        return device, None
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off (GPU_HOSTS.md); set it to override
    init = "env://" if is_env else f"tcp://{spec.master_addr}:{spec.master_port}"
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world,
                            timeout=timedelta(seconds=spec.timeout_s), **kwargs)
    control = dist.new_group(backend="gloo") if backend == "nccl" else dist.group.WORLD
    return device, control


def build_runner(spec: LaunchSpec, rank: int, world: int, device: torch.device, control) -> ModelRunner:
    """Load this rank's shard and allocate the KV cache with the block count every rank can hold."""
    runner = ModelRunner(spec.source.model_config(), spec.engine, device, rank, world,
                         model_dir=spec.source.model_dir)
    num_blocks = runner.suggest_num_blocks()
    if world > 1:
        t = torch.tensor([num_blocks], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=control)
        num_blocks = int(t.item())
    if num_blocks < 2:
        raise RuntimeError(f"only {num_blocks} KV blocks fit; lower --max-num-batched-tokens, raise "
                           "--kv-cache-fraction or use a larger --tp")
    runner.init_kv_cache(num_blocks)
    runner.faults.update(spec.faults)
    return runner


def release_graphs(runner: ModelRunner | None, is_sync: bool = True) -> None:
    """Destroy the runner's captured CUDA graphs before NCCL teardown: ncclCommDestroy waits until every graph that
    captured one of its collectives is gone (seen on 2x/4x H200: TP runs never exited). After a failure, no sync:
    a collective whose peers are gone never completes."""
    if runner is None or runner.graphs is None:
        return
    if runner.device.type == "cuda" and is_sync:
        torch.cuda.synchronize(runner.device)
    runner.graphs.graphs.clear()
    runner.graphs = None
    gc.collect()


def _spawned_rank(rank: int, spec: LaunchSpec, world: int) -> None:
    procname.set_thread_name(procname.rank_name(procname.ENGINE, rank))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; rank 0 shuts the others down
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(levelname)s %(message)s")
    device, control = init_rank(spec, rank, world, rank)
    runner = build_runner(spec, rank, world, device, control)
    worker_loop(runner, control, spec.is_spans)
    release_graphs(runner)
    dist.destroy_process_group()  # collective under NCCL: rank 0 enters it too before waiting for this process


def _spawn_ranks(spec: LaunchSpec, world: int) -> list:
    """Single host: start ranks 1..world-1 as spawned processes."""
    spec.master_port = spec.master_port or spec.engine.dist_port or free_port()
    ctx = torch.multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_spawned_rank, args=(r, spec, world), daemon=True) for r in range(1, world)]
    for p in procs:
        p.start()
    return procs


@contextmanager
def start_ranks(spec: LaunchSpec) -> Iterator[tuple[ModelRunner, object]]:
    """Rank 0's runner and step broadcast (None at tp 1); other ranks run until the block exits.

    Under torchrun/SLURM, ranks other than 0 run their worker loop inside this call and then exit the process.
    """
    launched = env_rank()
    world = launched[1] if launched else spec.engine.tp
    if launched and launched[1] != spec.engine.tp:
        raise RuntimeError(f"WORLD_SIZE={launched[1]} but --tp {spec.engine.tp}; they must match")
    procs = _spawn_ranks(spec, world) if world > 1 and not launched else []
    rank, local_rank = (launched[0], launched[2]) if launched else (0, 0)
    if rank != 0:  # torchrun/SLURM: this process is a worker rank
        procname.set_thread_name(procname.rank_name(procname.ENGINE, rank))
    device, control = init_rank(spec, rank, world, local_rank, is_env=bool(launched))
    runner, is_clean = None, False
    try:
        runner = build_runner(spec, rank, world, device, control)
        if rank != 0:
            worker_loop(runner, control, spec.is_spans)
            is_clean = True
            raise SystemExit(0)

        channel = open_channel(control, 0, world) if world > 1 else None
        yield runner, (channel.send if channel else None)
        if channel:
            channel.send(None)
            channel.close()
        is_clean = True
    finally:
        if is_clean and world > 1 and dist.is_initialized():
            # NCCL teardown is collective and the other ranks are in it now: join them there before waiting for
            # their exit (else rank 0 waits in join while they wait for rank 0)
            release_graphs(runner)
            dist.destroy_process_group()
        grace = 30.0 if is_clean else 2.0  # after a failure the others may be stuck in a collective for good
        for p in procs:
            p.join(timeout=grace)
            if p.is_alive():
                p.kill()
        if world > 1 and dist.is_initialized():
            release_graphs(runner, is_sync=False)  # else the NCCL teardown below waits for them forever
            dist.destroy_process_group()
