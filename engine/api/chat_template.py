"""Chat templates: the model directory's `chat_template` (tokenizer_config.json, or chat_template.jinja beside it)
rendered with jinja2 the way transformers does (sandboxed, trim_blocks/lstrip_blocks, `raise_exception`), else a
built-in Llama-3 template for the random-weight presets."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")


class ChatTemplateError(ValueError):
    """The template refused the conversation (its own raise_exception, or a rendering error)."""


def _token_text(value: Any) -> str:
    if isinstance(value, dict):  # {"content": "<s>", "lstrip": false, ...} in older tokenizer_config.json files
        return str(value.get("content", ""))
    return value if isinstance(value, str) else ""


@dataclass(slots=True)
class ChatTemplate:
    source: str
    bos_token: str = ""  # as text: the template writes it, so the prompt is tokenized without special tokens
    eos_token: str = ""
    origin: str = "built-in llama3"
    _template: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise ChatTemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(self.source)
        except TemplateError as exc:
            raise ChatTemplateError(f"the chat template from {self.origin} does not compile: {exc}") from None

    @property
    def has_special_tokens(self) -> bool:
        """Whether the rendered text carries BOS itself (then it is tokenized without adding special tokens)."""
        return bool(self.bos_token)

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages` ({"role", "content"} dicts); ChatTemplateError if the template refuses."""
        from jinja2.exceptions import TemplateError

        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token)
        except ChatTemplateError:
            raise
        except (TemplateError, TypeError, ValueError, KeyError, IndexError) as exc:
            raise ChatTemplateError(f"the chat template could not render these messages: {exc}") from None


def load_chat_template(model_dir: str = "") -> ChatTemplate:
    """The model directory's template when it has one, else the built-in Llama-3 template."""
    root = Path(model_dir) if model_dir else None
    cfg_path = root / "tokenizer_config.json" if root else None
    cfg = json.loads(cfg_path.read_text()) if cfg_path is not None and cfg_path.is_file() else {}
    source = cfg.get("chat_template")
    if isinstance(source, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("default") or next(iter(named.values()), None)
    origin = str(cfg_path)
    if not source and root is not None and (root / "chat_template.jinja").is_file():
        source, origin = (root / "chat_template.jinja").read_text(), str(root / "chat_template.jinja")
    if not source:
        return ChatTemplate(LLAMA3_TEMPLATE)
    return ChatTemplate(source, _token_text(cfg.get("bos_token")), _token_text(cfg.get("eos_token")), origin)
