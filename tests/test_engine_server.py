"""The real aiohttp server over a tiny CPU engine: 50 concurrent streaming requests through the `openai` client,
OpenAI-style 400/404/429/503 answers, client disconnect freeing KV blocks, /v1/models, /health, /metrics.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time

import pytest

from engine_helpers import ServerThread, make_engine

openai = pytest.importorskip("openai", reason="the openai client is a test extra (absent on the GPU hosts)")
text_string_to_metric_families = pytest.importorskip("prometheus_client.parser").text_string_to_metric_families

NUM_CONCURRENT = 50


@pytest.fixture(scope="module")
def server():
    engine = make_engine(max_num_seqs=64, max_num_batched_tokens=512, num_cpu_blocks=512)
    with ServerThread(engine) as srv:
        yield srv


def _post(srv: ServerThread, path: str, body: bytes | str, timeout: float = 60.0):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.headers, data  # headers: case-insensitive


def _get(srv: ServerThread, path: str):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


async def _stream_one(client: openai.AsyncOpenAI, model: str, i: int) -> dict:
    max_tokens = 8 + i % 17
    stream = await client.completions.create(
        model=model, prompt=f"request number {i}: " + "x" * (i % 23), max_tokens=max_tokens, temperature=0.0,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    texts, finish, usage, ids = [], None, None, set()
    async for ch in stream:
        ids.add(ch.id)
        if ch.choices:
            texts.append(ch.choices[0].text)
            finish = ch.choices[0].finish_reason or finish
        if ch.usage is not None:
            usage = ch.usage
    return {"max_tokens": max_tokens, "num_chunks": len(texts), "finish": finish, "usage": usage, "ids": ids,
            "text": "".join(texts)}


def test_50_concurrent_streams_complete_well_formed(server):
    async def run():
        async with openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="none", max_retries=0) as client:
            return await asyncio.gather(*(_stream_one(client, server.engine.model_name, i)
                                          for i in range(NUM_CONCURRENT)))

    steps_before = server.engine.num_steps
    results = asyncio.run(run())
    assert len(results) == NUM_CONCURRENT
    for r in results:
        assert r["finish"] == "length"
        assert len(r["ids"]) == 1  # every chunk carries the request's id
        assert r["usage"].completion_tokens == r["max_tokens"]
        assert r["usage"].total_tokens == r["usage"].prompt_tokens + r["max_tokens"]
        assert r["num_chunks"] == r["max_tokens"]  # one chunk per generated token
    # served as one continuous batch: far fewer steps than generated tokens
    assert server.engine.num_steps - steps_before < sum(r["max_tokens"] for r in results) / 4
    assert server.engine.allocator.num_free == server.engine.allocator.num_usable


def test_streamed_text_equals_non_streamed(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="none", max_retries=0)
    kw = dict(model=server.engine.model_name, prompt="Hello there", max_tokens=20, temperature=0.0,
              extra_body={"ignore_eos": True})
    whole = client.completions.create(**kw)
    parts = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw) if c.choices)
    assert whole.choices[0].text == parts
    assert whole.usage.completion_tokens == 20
    prompt_ids = client.completions.create(**{**kw, "prompt": [256, 72, 101, 108, 108, 111]})
    assert prompt_ids.usage.prompt_tokens == 6


@pytest.mark.parametrize("body,param", [
    ('{"prompt": "hi", "max_tokens": 5', None),  # malformed JSON
    ('[1, 2]', None),
    ('{"prompt": "hi", "max_tokens": "5"}', "max_tokens"),
    ('{"prompt": "hi", "max_tokens": 5.5}', "max_tokens"),
    ('{"prompt": "hi", "temperature": "hot"}', "temperature"),
    ('{"prompt": "hi", "stream": "yes"}', "stream"),
    ('{"prompt": 42}', "prompt"),
    ('{"prompt": []}', "prompt"),
    ('{"prompt": [1, 99999]}', "prompt"),
    ('{"prompt": "hi", "max_tokens": 0}', "max_tokens"),
    ('{"prompt": "hi", "max_tokens": -3}', "max_tokens"),
    ('{"prompt": "hi", "top_p": 0}', "top_p"),
    ('{"prompt": "hi", "stop": [1]}', "stop"),
    ('{"prompt": "hi", "n": 0}', "n"),
])
def test_bad_requests_get_400_with_openai_error_body(server, body, param):
    status, _, data = _post(server, "/v1/completions", body)
    assert status == 400, data
    err = json.loads(data)["error"]
    assert err["code"] == 400 and err["type"] == "invalid_request_error" and err["message"]
    assert err["param"] == param


def test_prompt_longer_than_context_is_400(server):
    limit = server.engine.max_model_len
    status, _, data = _post(server, "/v1/completions", json.dumps({"prompt": [65] * (limit + 1), "max_tokens": 1}))
    assert status == 400 and json.loads(data)["error"]["param"] == "prompt"
    status, _, data = _post(server, "/v1/completions", json.dumps({"prompt": [65] * 10, "max_tokens": limit}))
    assert status == 400 and "maximum context length" in json.loads(data)["error"]["message"]


def test_openai_client_raises_bad_request(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=server.engine.model_name, prompt="x", max_tokens=0)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=2)


def test_models_health_metrics(server):
    status, data = _get(server, "/v1/models")
    assert status == 200 and json.loads(data)["data"][0]["id"] == server.engine.model_name
    assert _get(server, "/health")[0] == 200
    _post(server, "/v1/completions", json.dumps({"prompt": "metrics please", "max_tokens": 3}))
    status, data = _get(server, "/metrics")
    assert status == 200
    names = {s.name for fam in text_string_to_metric_families(data.decode()) for s in fam.samples}
    for want in ("vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_count",
                 "vllm:e2e_request_latency_seconds_sum", "vllm:request_queue_time_seconds_count",
                 "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:generation_tokens_total", "vllm:prompt_tokens_total", "vllm:request_success_total",
                 "gpusleuth_engine_spans_dropped_total", "gpusleuth_engine_spans_sent_total"):
        assert want in names, want


def test_metrics_stay_text_with_vllm_names_when_openmetrics_is_asked(server):
    """Prometheus 2.x asks for OpenMetrics first; prometheus_client would answer with `vllm_` names there."""
    _post(server, "/v1/completions", json.dumps({"prompt": "metrics again", "max_tokens": 2}))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0,application/"
                 "openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"})
    resp = conn.getresponse()
    data = resp.read().decode()
    conn.close()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    names = {s.name for fam in text_string_to_metric_families(data) for s in fam.samples}
    assert "vllm:generation_tokens_total" in names and not any(n.startswith("vllm_") for n in names)

def _wait(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_disconnect_mid_stream_aborts_and_frees_blocks(server):
    alloc = server.engine.allocator
    assert _wait(lambda: alloc.num_free == alloc.num_usable)
    body = json.dumps({"prompt": "y" * 100, "max_tokens": 400, "stream": True, "ignore_eos": True,
                       "temperature": 0.0})
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    received = b""
    while received.count(b"data: ") < 3:  # a few tokens streamed: the request holds KV blocks
        received += sock.recv(65536)
    assert alloc.num_free < alloc.num_usable
    sock.close()
    assert _wait(lambda: alloc.num_free == alloc.num_usable), "KV blocks were not returned after the disconnect"
    assert _wait(lambda: server.engine.metrics._success.labels(server.engine.model_name, "abort")._value.get() >= 1)


def test_queue_full_is_429_and_dead_engine_is_503():
    engine = make_engine(max_num_seqs=1, max_num_batched_tokens=64)
    with ServerThread(engine, max_waiting=1, retry_after_s=2) as srv:
        srv.loop.set_faults(type(engine.faults.config)(scheduler_sleep_ms=20.0))  # one slow step per token
        long = json.dumps({"prompt": "a", "max_tokens": 300, "ignore_eos": True})
        conns = []
        for num_waiting in (0, 1):  # one running, then one waiting behind it (max_num_seqs=1)
            c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            c.request("POST", "/v1/completions", body=long, headers={"Content-Type": "application/json"})
            conns.append(c)
            assert _wait(lambda: len(engine.scheduler.running) == 1 and len(engine.scheduler.waiting) == num_waiting)
        status, headers, data = _post(srv, "/v1/completions", json.dumps({"prompt": "b", "max_tokens": 2}))
        assert status == 429 and headers.get("Retry-After") == "2"
        assert json.loads(data)["error"]["type"] == "rate_limit_error"
        for c in conns:
            c.close()
        srv.loop.stop()
        status, headers, data = _post(srv, "/v1/completions", json.dumps({"prompt": "c", "max_tokens": 2}))
        assert status == 503 and headers.get("Retry-After") == "2"
        assert _get(srv, "/health")[0] == 503
