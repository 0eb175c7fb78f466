"""LLMEngine: rank 0's step loop body. Schedule, broadcast the step to the other ranks, run the model, sample,
turn tokens into client updates, and record spans, NVTX ranges and metrics. Not thread-safe: one thread steps it
(loop.py runs it for the HTTP server; `generate` drives it directly).

Spans (probes/spans/wire.py): a request's queued/prefill/decode phases and one step span per step, with the batch
(request ids, tokens), the scheduler's state, the thread and GPU that ran it and an earlier step's GPU time. Under
the HTTP server (`is_finish_deferred`) the "finished" span is left to the server, which sends it after "stream".
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import torch

from gpusleuth.engine.batch import StepInput, build_step_input, sampled_sequences
from gpusleuth.engine.faults import FaultConfig, SchedulerFaults
from gpusleuth.engine.kv_cache import BlockAllocator
from gpusleuth.engine.metrics import EngineMetrics
from gpusleuth.engine.outputs import FinishInfo, OutputProcessor, RequestOutput
from gpusleuth.engine.runner import ModelRunner
from gpusleuth.engine.sampler import Sampled, make_generator, sample_rows
from gpusleuth.engine.scheduler import Scheduler, StepPlan
from gpusleuth.engine.sequence import SamplingError, SamplingParams, Sequence
from gpusleuth.engine.spans import Nvtx, SpanEmitter
from gpusleuth.engine.step_timing import GpuStepTimer, gpu_identity
from gpusleuth.engine.tokenizer import Tokenizer

Broadcast = Callable[[StepInput | None], None]


class LLMEngine:
    def __init__(self, runner: ModelRunner, tokenizer: Tokenizer, *, model_name: str = "",
                 broadcast: Broadcast | None = None, emitter: SpanEmitter | None = None) -> None:
        ecfg = runner.engine_cfg
        self.runner, self.tokenizer, self.broadcast = runner, tokenizer, broadcast
        self.model_name = model_name or runner.cfg.name
        self.max_model_len = runner.max_model_len
        self.allocator = BlockAllocator(runner.num_blocks, ecfg.block_size)
        self.scheduler = Scheduler(self.allocator, ecfg.max_num_seqs, ecfg.max_num_batched_tokens)
        self.outputs = OutputProcessor(tokenizer, self.max_model_len)
        self.emitter = emitter or SpanEmitter(rank=0)
        self.metrics = EngineMetrics(self.model_name, self.emitter, runner.ops.name)
        self.nvtx = Nvtx(runner.device.type == "cuda")
        self.gpu = gpu_identity(runner.device)
        self.gpu_timer = GpuStepTimer(runner.device)
        self.is_finish_deferred = False  # set by the HTTP server, which sends "finished" itself (server.py)
        self._thread = (0, 0)  # (ident, native id) of the thread that stepped last
        self.faults = SchedulerFaults()
        self._pending_faults: FaultConfig | None = None
        self._seqs: dict[str, Sequence] = {}
        self._nvtx_phase: dict[str, int | None] = {}
        self.num_steps = 0
        self.logits_hook: Callable[[list[Sequence], torch.Tensor], None] | None = None  # tests: see raw logits

    # ---- requests -------------------------------------------------------------------------------------------
    def check_request(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Raise SamplingError naming the field when the request cannot fit the context or the vocabulary."""
        n = len(prompt_ids)
        if n == 0:
            raise SamplingError("prompt", "is empty")
        if any(not 0 <= t < self.runner.cfg.vocab_size for t in prompt_ids):
            raise SamplingError("prompt", f"token ids must be in 0..{self.runner.cfg.vocab_size - 1}")
        if n + params.max_tokens > self.max_model_len:
            raise SamplingError("max_tokens" if n < self.max_model_len else "prompt",
                                f"this model's maximum context length is {self.max_model_len} tokens; the request "
                                f"has {n} prompt tokens and max_tokens={params.max_tokens}")
        params.check_vocab(self.runner.cfg.vocab_size)

    def add_request(self, request_id: str, prompt_ids: list[int], params: SamplingParams,
                    arrival_ns: int | None = None, received_ns: int = 0) -> Sequence:
        """Queue a request; `arrival_ns` (default now) starts its queued phase, `received_ns` its whole life."""
        self.check_request(prompt_ids, params)
        if request_id in self._seqs:
            raise SamplingError("request_id", f"{request_id!r} is already running")
        seq = Sequence(request_id, list(prompt_ids), params, arrival_ns=arrival_ns or time.monotonic_ns(),
                       received_ns=received_ns, generator=make_generator(params.seed, self.runner.device))
        self._seqs[request_id] = seq
        self.outputs.add(seq)
        self.scheduler.add(seq)
        self._nvtx_phase[request_id] = self.nvtx.start(f"req {request_id} queued")
        self._update_gauges()
        return seq

    def abort(self, request_id: str) -> RequestOutput | None:
        """Drop a request (client gone); its KV blocks return to the allocator now."""
        seq = self._seqs.get(request_id)
        if seq is None:
            return None
        self.scheduler.finish(seq, "abort")
        self._finish(seq)
        self._update_gauges()  # at once: a client that left must not look running until the next step
        return self.outputs.aborted(seq)

    def _fail(self, seq: Sequence, exc: BaseException) -> RequestOutput:
        """Fail one request (its sampling or output processing raised); the step and the others go on."""
        seq.error = f"{type(exc).__name__}: {exc}"
        self.scheduler.finish(seq, "error")
        out = self.outputs.aborted(seq)
        out.finish = self._finish(seq)
        return out

    def _update_gauges(self) -> None:
        self.metrics.set_state(len(self.scheduler.running), len(self.scheduler.waiting), self.allocator.usage)

    def set_faults(self, config: FaultConfig) -> None:
        self.faults.update(config)
        self._pending_faults = config

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    # ---- the step -------------------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """One scheduler step; returns updates for every request that got a token or finished."""
        start = time.monotonic_ns()
        self.faults.on_step()
        plan = self.scheduler.schedule()
        if plan.is_empty:
            return []
        self.num_steps += 1
        for seq, _ in plan.prefill:  # before the step runs: its kernels belong to the prefill NVTX range
            self._mark_prefill_start(seq)
        self.nvtx.push(f"step {self.num_steps}")
        inp = build_step_input(plan, self.allocator.block_size, self.num_steps)
        inp.faults, self._pending_faults = self._pending_faults, None
        if self.broadcast is not None:
            self.broadcast(inp)
        self.gpu_timer.start(self.num_steps)
        logits = self.runner.execute(inp)
        seqs = sampled_sequences(plan)
        tokens = self._sample(seqs, logits)
        self.gpu_timer.stop()
        self.nvtx.pop()
        for seq in plan.decode:
            seq.num_computed += 1
        for seq, n in plan.prefill:
            seq.num_computed += n
        now = time.monotonic_ns()
        outs = [self._take(seq, sampled, now) for seq, sampled in zip(seqs, tokens)]
        self.metrics.generation_tokens.inc(sum(o.finish_reason != "error" for o in outs))
        self._record_step(plan, start, now)
        return outs

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor | None) -> list[Sampled]:
        if logits is None:
            return []
        if self.logits_hook is not None:
            self.logits_hook(seqs, logits)
        return sample_rows(logits, seqs, self.tokenizer.eos_token_ids)

    def _take(self, seq: Sequence, sampled: Sampled, now: int) -> RequestOutput:
        """seq's update for its sampled token, or its failure (isolation: nothing here stops the step)."""
        if sampled.error is not None:
            return self._fail(seq, sampled.error)
        try:
            out = self._append(seq, sampled.token, now)
        except Exception as exc:  # detokenizing or stop matching of one request: fail it alone
            return self._fail(seq, exc) if not seq.is_finished else self.outputs.aborted(seq)
        if sampled.logprobs is not None:
            out.logprobs = [sampled.logprobs]
        return out

    def _append(self, seq: Sequence, token: int, now: int) -> RequestOutput:
        seq.token_ids.append(token)
        self.metrics.on_token(seq, now)  # ITL/TTFT; the token counter is bumped once per step
        if seq.num_output == 1:
            self._phase_span(seq, "prefill", seq.scheduled_ns, now, seq.num_prompt, next_phase="decode")
            seq.first_token_ns = now
        seq.last_token_ns = now
        out, reason = self.outputs.update(seq, self.outputs.stop_reason(seq, token))
        if reason is not None:
            self.scheduler.finish(seq, reason)
            out.finish = self._finish(seq)
        return out

    def _finish(self, seq: Sequence) -> FinishInfo | None:
        """Spans, metrics and bookkeeping of a finished (or aborted) request; its "finished" span when deferred."""
        end = seq.finished_ns
        if seq.first_token_ns:
            self._phase_span(seq, "decode", seq.first_token_ns, end, seq.num_output - 1)
        elif seq.scheduled_ns:
            self._phase_span(seq, "prefill", seq.scheduled_ns, end, 0)
        else:
            self._phase_span(seq, "queued", seq.arrival_ns, end, 0)
        self.nvtx.end(self._nvtx_phase.pop(seq.request_id, None))
        begin = seq.received_ns or seq.arrival_ns
        ttft = (seq.first_token_ns - begin) / 1e9 if seq.first_token_ns else None
        tpot = ((seq.last_token_ns - seq.first_token_ns) / 1e9 / (seq.num_output - 1)) if seq.num_output > 1 else None
        attrs = {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": (end - begin) / 1e9, "status": seq.finish_reason,
                 "num_preemptions": seq.num_preemptions}
        self.metrics.on_finish(seq)
        del self._seqs[seq.request_id]
        if self.is_finish_deferred:
            return FinishInfo(end, attrs)
        self.emitter.add("request", "finished", seq.request_id, end, end, seq.num_output, 0, **attrs)
        return None

    def _mark_prefill_start(self, seq: Sequence) -> None:
        if seq.num_computed == 0 and seq.num_output == 0 and seq.num_preemptions == 0:  # first admission only
            self._phase_span(seq, "queued", seq.arrival_ns, seq.scheduled_ns, seq.num_prompt, next_phase="prefill")

    def _phase_span(self, seq: Sequence, phase: str, start: int, end: int, tokens: int,
                    next_phase: str | None = None) -> None:
        self.emitter.add("request", phase, seq.request_id, start, end, tokens, len(self.scheduler.running))
        self.nvtx.end(self._nvtx_phase.pop(seq.request_id, None))
        if next_phase is not None:
            self._nvtx_phase[seq.request_id] = self.nvtx.start(f"req {seq.request_id} {next_phase}")

    def _record_step(self, plan: StepPlan, start: int, end: int) -> None:
        num_prefill_tokens = sum(n for _, n in plan.prefill)
        if self.emitter.is_enabled:
            self._step_span(plan, start, end, num_prefill_tokens)
        self.emitter.flush()
        if num_prefill_tokens:
            self.metrics.prompt_tokens.inc(num_prefill_tokens)
        self.metrics.on_step(plan.num_tokens, len(self.scheduler.running), len(self.scheduler.waiting),
                             self.allocator.usage, len(plan.preempted))

    def _step_span(self, plan: StepPlan, start: int, end: int, num_prefill_tokens: int) -> None:
        ids = [s.request_id for s in plan.decode]
        ids += [s.request_id for s, _ in plan.prefill]
        gpu = self.gpu_timer.take_done()  # an earlier step's, once the GPU has finished it (no sync)
        extra = {"gpu_ms": gpu[1], "gpu_step": gpu[0]} if gpu else {}
        self.emitter.add("step", "step", f"step-{self.num_steps}", start, end, plan.num_tokens, len(ids),
                         tid=self._native_tid(), gpu_index=self.gpu.index, gpu_uuid=self.gpu.uuid,
                         num_prefill=len(plan.prefill), num_prefill_tokens=num_prefill_tokens,
                         num_decode=len(plan.decode), step_id=self.num_steps, request_ids=ids,
                         num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting),
                         kv_usage=round(self.allocator.usage, 4), num_preempted=len(plan.preempted),
                         preempted_ids=[s.request_id for s in plan.preempted], **extra)

    def _native_tid(self) -> int:
        # get_native_id is a gettid syscall each time (microseconds under gVisor); get_ident is not
        ident = threading.get_ident()
        if ident != self._thread[0]:
            self._thread = (ident, threading.get_native_id())
        return self._thread[1]

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]) -> list[dict]:
        """Offline: run prompts to completion; per prompt {"token_ids", "text", "finish_reason"}."""
        many = params if isinstance(params, list) else [params] * len(prompts)
        ids = [f"gen-{self.num_steps}-{i}" for i in range(len(prompts))]
        results = {rid: {"token_ids": [], "text": "", "finish_reason": None} for rid in ids}
        for rid, prompt, p in zip(ids, prompts, many):
            self.add_request(rid, prompt, p)
        while self.has_work:
            for out in self.step():
                res = results[out.request_id]
                res["token_ids"] += out.new_token_ids
                res["text"] += out.delta_text
                res["finish_reason"] = out.finish_reason
        return [results[rid] for rid in ids]
