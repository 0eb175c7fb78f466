"""Chat templates: a model directory's tokenizer_config.json template (string or named list, BOS/EOS as text or
as token objects) rendered with jinja2 as transformers does, its raise_exception refusing a conversation, the
built-in Llama-3 template for presets, and transformers' own rendering as the reference."""
from __future__ import annotations

import json

import pytest

from gpusleuth.engine.api.chat_template import LLAMA3_TEMPLATE, ChatTemplateError, load_chat_template

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi! "},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again"}]
ALTERNATING = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
               "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
               "{{ bos_token + '[' + m['role'] + '] ' + m['content'] + eos_token }}{% endfor %}"
               "{% if add_generation_prompt %}[assistant] {% endif %}")


def test_builtin_llama3_template_for_presets():
    template = load_chat_template("")
    text = template.render(MESSAGES)
    assert text.startswith("<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>")
    assert "user<|end_header_id|>\n\nHi!<|eot_id|>" in text  # content trimmed, as Meta's template does
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert not template.has_special_tokens  # BOS comes from the tokenizer, not the text


def test_model_directory_template_with_token_objects(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": [{"name": "tool_use", "template": "unused"}, {"name": "default", "template": ALTERNATING}],
        "bos_token": {"content": "<s>", "lstrip": False}, "eos_token": "</s>"}))
    template = load_chat_template(str(tmp_path))
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert template.render(msgs) == "<s>[user] a</s><s>[assistant] b</s>[assistant] "
    assert template.has_special_tokens
    with pytest.raises(ChatTemplateError, match="must alternate"):
        template.render([{"role": "assistant", "content": "first"}])


def test_same_text_as_transformers():
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models

    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"x": 0}, "x")),
                                               bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    tok.chat_template = "{{- bos_token }}" + LLAMA3_TEMPLATE.removeprefix("{{- bos_token }}")
    want = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    got = load_chat_template("")
    got.bos_token = "<|begin_of_text|>"
    assert got.render(MESSAGES) == want
