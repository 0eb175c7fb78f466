"""The rank 0 -> other ranks step channel (engine/step_channel.py) between real processes over a gloo group: the
shared-memory mailbox (with a data area too small for some messages, so they take the gloo path) and the plain gloo
transport deliver every step, in order, intact, to every reader."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gpusleuth.engine.batch import StepInput
from gpusleuth.engine.faults import FaultConfig
from gpusleuth.engine.step_channel import GlooChannel, SharedMemoryChannel, decode_step, encode_step, open_channel


def make_step(i: int) -> StepInput:
    n = 1 + (i * 37) % 3000  # up to ~70 KB encoded: beyond the 16 KB data area below
    return StepInput(
        input_ids=torch.arange(n, dtype=torch.int64) + i, positions=torch.arange(n, dtype=torch.int64),
        slot_mapping=torch.arange(n, dtype=torch.int64) * 2, num_decode=min(n, 3),
        decode_block_tables=torch.full((min(n, 3), 4), i, dtype=torch.int32),
        decode_context_lens=torch.ones(min(n, 3), dtype=torch.int32), prefill_block_tables=torch.zeros(0, 1,
        dtype=torch.int32), prefill_cu_seqlens=torch.tensor([0, n], dtype=torch.int32),
        prefill_context_lens=torch.tensor([n], dtype=torch.int32), is_prefill_fresh=bool(i % 2), prefill_max_len=n,
        logits_indices=torch.tensor([n - 1]), step_id=i,
        faults=FaultConfig(rank=1, allreduce_delay_ms=float(i)) if i % 5 == 0 else None)


def same(a: StepInput, b: StepInput) -> bool:
    for f in StepInput.__dataclass_fields__:
        x, y = getattr(a, f), getattr(b, f)
        if isinstance(x, torch.Tensor):
            if not (x.dtype == y.dtype and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


def _rank(rank: int, world: int, init: str, transport: str, count: int, results) -> None:
    os.environ["GPUSLEUTH_STEP_CHANNEL"] = transport
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    channel = open_channel(dist.group.WORLD, rank, world, capacity=16 * 1024)
    kind = type(channel).__name__
    if rank == 0:
        for i in range(count):
            channel.send(make_step(i))
        channel.send(None)
        results.put((rank, kind, count, 0))
    else:
        got, bad = 0, 0
        while (step := channel.recv()) is not None:
            bad += not same(step, make_step(got))
            got += 1
        results.put((rank, kind, got, bad))
    channel.close()
    dist.destroy_process_group()


@pytest.mark.parametrize("transport,expected", [("shm", SharedMemoryChannel), ("gloo", GlooChannel)])
def test_every_step_reaches_every_rank_in_order(tmp_path, transport, expected):
    world, count = 3, 200
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    init = f"file://{tmp_path}/store"
    procs = [ctx.Process(target=_rank, args=(r, world, init, transport, count, results)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    out = sorted(results.get(timeout=5) for _ in range(world))
    assert [k for _, k, _, _ in out] == [expected.__name__] * world
    assert [(r, n, bad) for r, _, n, bad in out] == [(0, count, 0), (1, count, 0), (2, count, 0)]
    assert not [f for f in os.listdir("/dev/shm") if f.startswith("gpusleuth-steps-")], "mailbox file left behind"


def test_encoding_round_trip_and_none():
    step = make_step(10)
    assert same(decode_step(encode_step(step)), step)
    assert decode_step(encode_step(None)) is None


def test_writer_names_a_reader_that_stopped_taking_steps(tmp_path):
    path = str(tmp_path / "mailbox")
    writer = SharedMemoryChannel(path, 0, 2, 1 << 20, gloo=None)
    reader = SharedMemoryChannel(path, 1, 2, 1 << 20, gloo=None)
    writer.send_timeout_s = 0.3
    try:
        writer.send(make_step(1))
        with pytest.raises(TimeoutError, match=r"rank\(s\) \[1\]"):
            writer.send(make_step(2))  # rank 1 has not taken step 1
        assert same(reader.recv(), make_step(1))
        writer.send(make_step(2))
        assert same(reader.recv(), make_step(2))
    finally:
        reader.close()
        writer.close()
    assert not os.path.exists(path)
