"""Per-request state: sampling parameters, tokens, KV blocks and the timestamps spans and metrics are built from."""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class SamplingError(ValueError):
    """A bad sampling parameter; `param` names the request field to fix (the server answers 400)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


@dataclass(slots=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1 = off
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    is_ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens <= 0:
            raise SamplingError("max_tokens", f"must be > 0, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 100.0:
            raise SamplingError("temperature", f"must be in 0..100, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise SamplingError("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.top_k < -1:
            raise SamplingError("top_k", f"must be -1, 0 (off) or positive, got {self.top_k}")
        if len(self.stop) > 16 or any(not s for s in self.stop):
            raise SamplingError("stop", "at most 16 non-empty strings")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Sequence:
    """One request inside the engine. `token_ids` is prompt + output; the first `num_computed` have KV cached."""

    request_id: str
    token_ids: list[int]
    params: SamplingParams
    num_prompt: int = 0
    num_computed: int = 0
    block_table: list[int] = field(default_factory=list)
    status: SeqStatus = SeqStatus.WAITING
    finish_reason: str | None = None
    num_preemptions: int = 0
    generator: object | None = None  # torch.Generator for seeded sampling (rank 0 only)
    arrival_ns: int = field(default_factory=time.monotonic_ns)  # handed to the scheduler (start of "queued")
    received_ns: int = 0  # the HTTP server had the request (start of "received"); 0 offline
    scheduled_ns: int = 0  # first admitted to a step (end of the queued phase)
    first_token_ns: int = 0
    last_token_ns: int = 0
    finished_ns: int = 0
    text: str = ""  # detokenized output sent so far (after stop-string truncation)

    def __post_init__(self) -> None:
        if not self.num_prompt:
            self.num_prompt = len(self.token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output(self) -> int:
        return len(self.token_ids) - self.num_prompt

    @property
    def is_finished(self) -> bool:
        return self.status is SeqStatus.FINISHED
