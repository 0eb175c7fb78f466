"""Tokenizers: the model directory's tokenizer.json (via `tokenizers`), else a byte-level one for random presets.

Nothing is downloaded. The byte tokenizer maps bytes to ids 0..255 and uses the model's BOS/EOS ids; ids past 255
that are not special (a random model emits them) decode to one printable ASCII character each, so every generated
token is visible in a stream.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from gpusleuth.engine.config import ModelConfig


class Tokenizer(Protocol):
    eos_token_ids: tuple[int, ...]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    def __init__(self, bos_token_id: int | None, eos_token_ids: tuple[int, ...], vocab_size: int) -> None:
        assert vocab_size >= 256, "the byte tokenizer needs a vocabulary of at least 256 ids"
        self.bos_token_id = bos_token_id
        self.eos_token_ids = eos_token_ids
        self._special = set(eos_token_ids) | ({bos_token_id} if bos_token_id is not None else set())

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = list(text.encode("utf-8"))
        return [self.bos_token_id, *ids] if self.bos_token_id is not None and add_special_tokens else ids

    def decode(self, ids: list[int]) -> str:
        out = bytearray()
        for i in ids:
            if i in self._special:
                continue
            out.append(i if i < 256 else 33 + i % 94)
        return out.decode("utf-8", errors="replace")


class HFTokenizer:
    """tokenizer.json through the `tokenizers` library (special tokens such as BOS added by its post-processor)."""

    def __init__(self, path: Path, eos_token_ids: tuple[int, ...]) -> None:
        from tokenizers import Tokenizer as _Tok

        self._tok = _Tok.from_file(str(path))
        self.eos_token_ids = eos_token_ids

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)


def load_tokenizer(cfg: ModelConfig, model_dir: str = "") -> Tokenizer:
    """tokenizer.json from `model_dir` when present, else the byte tokenizer."""
    path = Path(model_dir) / "tokenizer.json" if model_dir else None
    if path is not None and path.is_file():
        return HFTokenizer(path, cfg.eos_token_ids)
    return ByteTokenizer(cfg.bos_token_id, cfg.eos_token_ids, cfg.vocab_size)


REPLACEMENT = "\ufffd"
MAX_PENDING_TOKENS = 3  # a UTF-8 character is at most 4 bytes: at most 3 tokens can wait for its last one


class IncrementalDetokenizer:
    """Turns a growing list of output ids into text deltas in O(new tokens) per call.

    It decodes a short window: the ids since `prefix` (already emitted, kept as context because a token's text can
    depend on its neighbours) and the new ones. Text is emitted as soon as it is decodable: a character still
    incomplete at the end (at most the last 3 tokens) is held back; bytes that can never complete one come out
    as replacement characters once more than 3 tokens follow the last decodable text.
    """

    def __init__(self, tokenizer: Tokenizer, start: int = 0) -> None:
        self.tokenizer = tokenizer
        self.sent = ""
        self._prefix = start  # window start (ids before `start`, e.g. the prompt, are never decoded)
        self._read = start  # ids before this are emitted

    def delta(self, ids: list[int], is_final: bool) -> str:
        """Text of ids[start:] not returned before (ids only ever grow)."""
        end = len(ids) if is_final else self._stable_end(ids)
        if end <= self._read:
            return ""
        before = self.tokenizer.decode(ids[self._prefix:self._read])
        text = self.tokenizer.decode(ids[self._prefix:end])
        if len(text) <= len(before):
            return ""  # nothing new (tokens without text)
        delta = text[len(before):]
        self._prefix, self._read = self._read, end
        self.sent += delta
        return delta

    def _stable_end(self, ids: list[int]) -> int:
        """How many ids can be emitted now: all, unless the last few may still complete a character."""
        decode, n = self.tokenizer.decode, len(ids)
        if not decode(ids[self._prefix:]).endswith(REPLACEMENT):
            return n
        for end in range(n - 1, max(self._read, n - MAX_PENDING_TOKENS) - 1, -1):
            if not decode(ids[self._prefix:end]).endswith(REPLACEMENT):
                return end  # the tokens after `end` may be the start of one character
        return n if n - MAX_PENDING_TOKENS >= self._read else self._read
