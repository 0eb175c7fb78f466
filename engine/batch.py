"""A scheduler step turned into model inputs (CPU tensors), built on rank 0 and broadcast to the other ranks."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gpusleuth.engine.faults import FaultConfig
from gpusleuth.engine.model import AttnMeta
from gpusleuth.engine.scheduler import StepPlan
from gpusleuth.engine.sequence import Sequence


@dataclass(slots=True)
class StepInput:
    input_ids: torch.Tensor  # [T] int64: decode tokens first, then prefill chunks
    positions: torch.Tensor  # [T] int64
    slot_mapping: torch.Tensor  # [T] int64
    num_decode: int
    decode_block_tables: torch.Tensor  # [Bd, M] int32
    decode_context_lens: torch.Tensor  # [Bd] int32
    prefill_block_tables: torch.Tensor  # [Bp, M] int32
    prefill_cu_seqlens: torch.Tensor  # [Bp+1] int32
    prefill_context_lens: torch.Tensor  # [Bp] int32
    is_prefill_fresh: bool
    prefill_max_len: int  # longest prefill chunk (0 when none)
    logits_indices: torch.Tensor  # [S] int64: rows whose next token is sampled
    step_id: int = 0
    faults: FaultConfig | None = None  # set when the fault config changed (applied by every rank)

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def is_decode_only(self) -> bool:
        return self.num_decode == self.num_tokens

    def to_meta(self, device: torch.device) -> AttnMeta:
        def put(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=True)

        has_prefill = self.num_tokens > self.num_decode
        return AttnMeta(
            positions=put(self.positions), slot_mapping=put(self.slot_mapping), num_decode=self.num_decode,
            decode_block_tables=put(self.decode_block_tables) if self.num_decode else None,
            decode_context_lens=put(self.decode_context_lens) if self.num_decode else None,
            prefill_block_tables=put(self.prefill_block_tables) if has_prefill else None,
            prefill_cu_seqlens=put(self.prefill_cu_seqlens) if has_prefill else None,
            prefill_context_lens=put(self.prefill_context_lens) if has_prefill else None,
            is_prefill_fresh=self.is_prefill_fresh, prefill_max_len=self.prefill_max_len)


def _tables(seqs: list[Sequence]) -> torch.Tensor:
    if not seqs:
        return torch.zeros((0, 1), dtype=torch.int32)
    width = max(len(s.block_table) for s in seqs)
    return torch.tensor([s.block_table + [0] * (width - len(s.block_table)) for s in seqs], dtype=torch.int32)


def _slots(seq: Sequence, start: int, stop: int, block_size: int) -> list[int]:
    table = seq.block_table
    return [table[p // block_size] * block_size + p % block_size for p in range(start, stop)]


def build_step_input(plan: StepPlan, block_size: int, step_id: int = 0) -> StepInput:
    """Model inputs for `plan` (sequences' num_computed not yet advanced)."""
    ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    logits_rows: list[int] = []
    for seq in plan.decode:
        p = seq.num_computed
        logits_rows.append(len(ids))
        ids.append(seq.token_ids[p])
        positions.append(p)
        slots += _slots(seq, p, p + 1, block_size)
    cu = [0]
    prefill_seqs = [seq for seq, _ in plan.prefill]
    for seq, n in plan.prefill:
        c = seq.num_computed
        ids += seq.token_ids[c:c + n]
        positions += range(c, c + n)
        slots += _slots(seq, c, c + n, block_size)
        cu.append(cu[-1] + n)
        if c + n == seq.num_tokens:  # the chunk completes the prompt: its last row predicts the next token
            logits_rows.append(len(ids) - 1)
    # ids, positions and slots in one tensor creation (a batch-1 decode step is dominated by such fixed costs)
    tokens = torch.tensor([ids, positions, slots], dtype=torch.int64)
    return StepInput(
        input_ids=tokens[0], positions=tokens[1], slot_mapping=tokens[2], num_decode=len(plan.decode),
        decode_block_tables=_tables(plan.decode),
        decode_context_lens=torch.tensor([s.num_computed + 1 for s in plan.decode], dtype=torch.int32),
        prefill_block_tables=_tables(prefill_seqs), prefill_cu_seqlens=torch.tensor(cu, dtype=torch.int32),
        prefill_context_lens=torch.tensor([s.num_computed + n for s, n in plan.prefill], dtype=torch.int32),
        is_prefill_fresh=all(seq.num_computed == 0 for seq, _ in plan.prefill),
        prefill_max_len=max((n for _, n in plan.prefill), default=0),
        logits_indices=torch.tensor(logits_rows, dtype=torch.int64), step_id=step_id)


def sampled_sequences(plan: StepPlan) -> list[Sequence]:
    """The sequences whose next token this step samples, in logits-row order."""
    done = [seq for seq, n in plan.prefill if seq.num_computed + n == seq.num_tokens]
    return [*plan.decode, *done]
