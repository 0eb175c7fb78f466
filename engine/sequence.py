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


# Ranges the sampler is numerically safe in (the HTTP models declare the same bounds, so /openapi.json shows them).
SEED_END = 2**64  # torch.Generator.manual_seed takes a uint64
MAX_TEMPERATURE = 100.0
GREEDY_BELOW = 1e-5  # temperatures under this sample greedily (as vLLM does): logits / t stays finite in fp32
MAX_LOGPROBS = 20
MAX_PENALTY = 2.0  # presence/frequency penalties (OpenAI's range: -2..2)
MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY = 0.01, 10.0  # logits scaled by at most 100x (1/5e-324 is inf)
MAX_LOGIT_BIAS = 100.0


@dataclass(slots=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 (or under GREEDY_BELOW) = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1 = off
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    is_ignore_eos: bool = False
    min_tokens: int = 0  # EOS and stop token ids are masked until this many tokens are out
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0  # 1 = off; > 1 discourages tokens of the prompt and the output so far
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: int | None = None  # the sampled token's logprob and this many most likely alternatives

    def __post_init__(self) -> None:
        _check(self.max_tokens > 0, "max_tokens", f"must be > 0, got {self.max_tokens}")
        _check(0.0 <= self.temperature <= MAX_TEMPERATURE, "temperature",
               f"must be in 0..{MAX_TEMPERATURE:g}, got {self.temperature}")
        _check(0.0 < self.top_p <= 1.0, "top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.top_k >= -1, "top_k", f"must be -1, 0 (off) or positive, got {self.top_k}")
        _check(self.seed is None or 0 <= self.seed < SEED_END, "seed", f"must be in [0, 2**64), got {self.seed}")
        _check(len(self.stop) <= 16 and all(self.stop), "stop", "at most 16 non-empty strings")
        _check(0 <= self.min_tokens <= self.max_tokens, "min_tokens",
               f"must be in 0..max_tokens ({self.max_tokens}), got {self.min_tokens}")
        for key in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, key)
            _check(-MAX_PENALTY <= value <= MAX_PENALTY, key, f"must be in -2..2, got {value}")
        _check(MIN_REPETITION_PENALTY <= self.repetition_penalty <= MAX_REPETITION_PENALTY, "repetition_penalty",
               f"must be in {MIN_REPETITION_PENALTY:g}..{MAX_REPETITION_PENALTY:g}, got {self.repetition_penalty}")
        _check(all(-MAX_LOGIT_BIAS <= b <= MAX_LOGIT_BIAS for b in self.logit_bias.values()), "logit_bias",
               "biases must be in -100..100")
        _check(self.logprobs is None or 0 <= self.logprobs <= MAX_LOGPROBS, "logprobs",
               f"must be in 0..{MAX_LOGPROBS}, got {self.logprobs}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    @property
    def has_processors(self) -> bool:
        """Whether logits are changed before sampling (penalties, biases, min_tokens)."""
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0
                    or self.logit_bias or self.min_tokens)

    def check_vocab(self, vocab_size: int) -> None:
        """Raise SamplingError when a token id named by these parameters is outside the vocabulary."""
        for key, ids in (("stop_token_ids", self.stop_token_ids), ("logit_bias", self.logit_bias)):
            bad = [t for t in ids if not 0 <= t < vocab_size]
            _check(not bad, key, f"token ids must be in 0..{vocab_size - 1}, got {bad[:3]}")


def _check(is_ok: bool, param: str, message: str) -> None:
    if not is_ok:
        raise SamplingError(param, message)


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
    error: str = ""  # why the engine failed this request alone (finish reason "error")

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
