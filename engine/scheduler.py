"""Continuous batching: decode every running request, continue chunked prefills, admit waiting requests while KV
blocks and the step's token budget last; when a decode needs a block and none is free, preempt the most recently
admitted request (its KV is dropped and recomputed later as a prefill of prompt + output so far).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from gpusleuth.engine.kv_cache import BlockAllocator, blocks_needed
from gpusleuth.engine.sequence import Sequence, SeqStatus


@dataclass(slots=True)
class StepPlan:
    """One step's work: decode sequences (1 token each) lead; then (sequence, chunk length) prefills."""

    decode: list[Sequence] = field(default_factory=list)
    prefill: list[tuple[Sequence, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.decode and not self.prefill

    @property
    def num_tokens(self) -> int:
        return len(self.decode) + sum(n for _, n in self.prefill)


class Scheduler:
    def __init__(self, allocator: BlockAllocator, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        self.allocator = allocator
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Mark `seq` finished (stop, length, abort) and return its blocks."""
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SeqStatus.WAITING:
            self.waiting.remove(seq)
        self._release(seq)
        seq.status, seq.finish_reason, seq.finished_ns = SeqStatus.FINISHED, reason, time.monotonic_ns()

    def schedule(self) -> StepPlan:
        plan = StepPlan()
        budget = self.max_num_batched_tokens
        budget = self._schedule_decodes(plan, budget)
        budget = self._schedule_running_prefills(plan, budget)
        self._admit_waiting(plan, budget)
        return plan

    def _schedule_decodes(self, plan: StepPlan, budget: int) -> int:
        for seq in list(self.running):
            if seq.status is not SeqStatus.RUNNING or seq.num_tokens - seq.num_computed != 1 or budget == 0:
                continue
            if not self._grow(seq, seq.num_computed + 1, plan):
                continue  # seq itself was preempted
            plan.decode.append(seq)
            budget -= 1
        return budget

    def _schedule_running_prefills(self, plan: StepPlan, budget: int) -> int:
        for seq in self.running:
            remaining = seq.num_tokens - seq.num_computed
            if remaining <= 1 or budget == 0:
                continue
            n = min(remaining, budget)
            need = blocks_needed(seq.num_computed + n, self.allocator.block_size) - len(seq.block_table)
            if not self.allocator.can_allocate(need):
                continue  # no preemption for prefills: they wait for decodes to finish
            seq.block_table += self.allocator.allocate(need)
            plan.prefill.append((seq, n))
            budget -= n
        return budget

    def _admit_waiting(self, plan: StepPlan, budget: int) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            n = min(seq.num_tokens, budget)
            need = blocks_needed(n, self.allocator.block_size)
            if not self.allocator.can_allocate(need):
                break  # first come, first served: nobody overtakes the head of the queue
            self.waiting.popleft()
            seq.block_table = self.allocator.allocate(need)
            seq.status = SeqStatus.RUNNING
            if not seq.scheduled_ns:
                seq.scheduled_ns = time.monotonic_ns()
            self.running.append(seq)
            plan.prefill.append((seq, n))
            budget -= n

    def _grow(self, seq: Sequence, num_tokens: int, plan: StepPlan) -> bool:
        """Give `seq` blocks for `num_tokens`, preempting the newest running requests; False if seq was the one."""
        need = blocks_needed(num_tokens, self.allocator.block_size) - len(seq.block_table)
        while not self.allocator.can_allocate(need):
            victim = self.running[-1]
            self._preempt(victim, plan)
            if victim is seq:
                return False
        seq.block_table += self.allocator.allocate(need)
        return True

    def _preempt(self, seq: Sequence, plan: StepPlan) -> None:
        self.running.remove(seq)
        if seq in plan.decode:
            plan.decode.remove(seq)
        self._release(seq)
        seq.status = SeqStatus.WAITING
        seq.num_computed = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
        plan.preempted.append(seq)

    def _release(self, seq: Sequence) -> None:
        self.allocator.free(seq.block_table)
        seq.block_table = []
