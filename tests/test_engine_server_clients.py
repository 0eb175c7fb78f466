"""Real clients against the real server: the `openai` client (completions and chat, streamed and not, n, logprobs,
penalties, seeds) and vLLM's benchmark client's request functions for completions and chat, which must parse every
stream. vLLM's file is run from a vLLM source tree, never copied here: $GPUSLEUTH_VLLM_TREE (a checkout, or a git
directory such as the search tool's mirror), holding benchmarks/backend_request_func.py (older trees) or
vllm/benchmarks/lib/endpoint_request_func.py (newer ones); without one that test is skipped and says so."""
from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine_helpers import ServerThread, make_engine

openai = pytest.importorskip("openai", reason="the openai client is a test extra (absent on the GPU hosts)")

VLLM_FILES = ("benchmarks/backend_request_func.py", "vllm/benchmarks/lib/endpoint_request_func.py")


@pytest.fixture(scope="module")
def server():
    engine = make_engine(max_model_len=256, max_num_seqs=32, max_num_batched_tokens=512)
    with ServerThread(engine) as srv:
        yield srv


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="none", max_retries=0)


def test_openai_completions_streamed_and_not_with_n_logprobs_penalties_seeds(client, server):
    kw = dict(model=server.engine.model_name, prompt="The server", max_tokens=8, temperature=0.9, seed=5, n=3,
              logprobs=2, presence_penalty=0.5, frequency_penalty=0.5, extra_body={"ignore_eos": True})
    whole = client.completions.create(**kw)
    assert [c.index for c in whole.choices] == [0, 1, 2] and whole.usage.completion_tokens == 24
    assert all(len(c.logprobs.tokens) == 8 and len(c.logprobs.top_logprobs[0]) <= 2 for c in whole.choices)
    texts = {i: "" for i in range(3)}
    for chunk in client.completions.create(stream=True, **kw):
        for c in chunk.choices:
            texts[c.index] += c.text
    assert [texts[i] for i in range(3)] == [c.text for c in whole.choices]  # same seeds, same choices
    greedy = {**kw, "temperature": 0.0, "n": 1, "max_tokens": 24, "presence_penalty": 0.0, "frequency_penalty": 0.0}
    plain = client.completions.create(**greedy).choices[0].text
    penalised = client.completions.create(**{**greedy, "frequency_penalty": 2.0}).choices[0].text
    assert len(set(penalised)) > 2 * len(set(plain))  # greedy repeats itself, the penalty stops it


def test_openai_chat_streamed_and_not(client, server):
    kw = dict(model=server.engine.model_name, max_completion_tokens=6, temperature=0.0, seed=1,
              messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi!"}],
              extra_body={"ignore_eos": True})
    whole = client.chat.completions.create(**kw)
    assert whole.choices[0].message.role == "assistant" and whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 6
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and chunks[-1].usage.completion_tokens == 6
    lp = client.chat.completions.create(**{**kw, "logprobs": True, "top_logprobs": 2, "n": 2})
    assert len(lp.choices) == 2 and len(lp.choices[0].logprobs.content) == 6
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in lp.choices[0].logprobs.content)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**{**kw, "messages": [{"role": "robot", "content": "x"}]})
    assert "messages" in str(err.value)


def _vllm_module(tmp_path: Path):
    tree = os.environ.get("GPUSLEUTH_VLLM_TREE", "")
    if not tree:
        mirror = Path("/work/.mirror/vllm-project+vllm")
        tree = str(mirror) if mirror.exists() else ""
    if not tree:
        pytest.skip("no vLLM source tree: set GPUSLEUTH_VLLM_TREE to a vllm-project/vllm checkout or git dir")
    root = Path(tree)
    for rel in VLLM_FILES:
        path = root / rel
        if not path.is_file() and (root / "HEAD").is_file():  # a bare git directory: read the file from HEAD
            shown = subprocess.run(["git", "--git-dir", str(root), "show", f"HEAD:{rel}"], capture_output=True)
            if shown.returncode == 0:
                path = tmp_path / Path(rel).name
                path.write_bytes(shown.stdout)
        if path.is_file():
            spec = importlib.util.spec_from_file_location("vllm_request_funcs", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules["vllm_request_funcs"] = module  # dataclasses look their module up
            spec.loader.exec_module(module)
            return module
    pytest.skip(f"{tree} holds none of {', '.join(VLLM_FILES)}")


def test_vllm_benchmark_request_functions_parse_every_stream(server, tmp_path):
    vllm = _vllm_module(tmp_path)
    kinds = {"completions": "async_request_openai_completions",
             "chat/completions": "async_request_openai_chat_completions"}

    async def run(path: str, func_name: str, i: int):
        inp = vllm.RequestFuncInput(prompt=f"benchmark prompt {i} " + "w" * i, prompt_len=20 + i, output_len=12,
                                    api_url=f"{server.base_url}/v1/{path}", model=server.engine.model_name)
        return await getattr(vllm, func_name)(inp)

    async def main():
        return await asyncio.gather(*(run(p, f, i) for p, f in kinds.items() for i in range(8)))

    outs = asyncio.run(main())
    assert all(o.success for o in outs), [o.error for o in outs if not o.success][:2]
    assert all(o.ttft > 0 and o.generated_text and o.latency >= o.ttft for o in outs)
    assert all(len(o.itl) >= 1 for o in outs)  # tokens arrived as separate chunks
