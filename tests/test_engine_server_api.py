"""The real FastAPI/uvicorn server over a tiny CPU engine, fed the inputs that used to kill it or get 500s, the fields
it used to ignore, and the HTTP-level abuse a server meets (unknown paths, huge bodies, slow clients, too many
connections); every answer is an OpenAI-style JSON body and the engine stays alive throughout. Streamed chunks are
checked against the declared response models."""
from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from engine_helpers import ServerThread, make_engine
from gpusleuth.engine.api.responses import ChatCompletionChunk, CompletionResponse

BIG = "1" * 5000


@pytest.fixture(scope="module")
def server():
    engine = make_engine(max_model_len=256, max_num_seqs=16, max_num_batched_tokens=256)
    with ServerThread(engine, header_timeout_s=1.0, read_timeout_s=1.0, max_body_bytes=64 * 1024,
                      max_connections=12) as srv:
        yield srv


def request(srv, method: str, path: str, body: str | bytes | None = None, timeout: float = 60.0):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body is not None else {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.headers, data


def post(srv, body, path: str = "/v1/completions"):
    status, headers, data = request(srv, "POST", path, body if isinstance(body, (str, bytes)) else json.dumps(body))
    return status, data


def error_of(status: int, data: bytes) -> dict:
    err = json.loads(data)["error"]
    assert err["code"] == status and err["type"] and err["message"], err
    return err


def events(data: bytes) -> list[dict]:
    lines = [ln[6:] for ln in data.decode().split("\n\n") if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(ln) for ln in lines[:-1]]


def assert_alive(srv) -> None:
    assert request(srv, "GET", "/health")[0] == 200
    status, data = post(srv, {"prompt": "still here", "max_tokens": 2})
    assert status == 200, data


def greedy_text(srv, **extra) -> str:
    status, data = post(srv, {"prompt": "same", "max_tokens": 8, "ignore_eos": True, "temperature": 0, **extra})
    assert status == 200, data
    return json.loads(data)["choices"][0]["text"]


@pytest.mark.parametrize("extra", [{"temperature": 1e-300}, {"temperature": 5e-324}, {"temperature": 1e-39},
                                   {"temperature": 0.8, "top_p": 1e-300}])
def test_numerically_extreme_sampling_is_greedy_not_fatal(server, extra):
    assert greedy_text(server, seed=7, **extra) == greedy_text(server)
    assert_alive(server)


@pytest.mark.parametrize("raw,param", [
    ('{"prompt":"hi","max_tokens":2,"temperature":0.8,"seed":18446744073709551616}', "seed"),
    ('{"prompt":"hi","max_tokens":2,"temperature":0.8,"seed":-9223372036854775809}', "seed"),
    ('{"prompt":"hi","max_tokens":2,"temperature":0.8,"seed":1000000000000000000000000000000}', "seed"),
    ('{"prompt":"abc\\ud800","max_tokens":2}', "prompt"),
    ('{"prompt":"hi","temperature":' + "9" * 400 + "}", "temperature"),
    ('{"prompt":"hi","max_tokens":' + BIG + "}", None),
    ('{"prompt":' + "[" * 5000 + "]" * 5000 + "}", None),
    ('{"prompt":"hi","frequency_penalty":"high"}', "frequency_penalty"),
    ('{"prompt":"hi","presence_penalty":true}', "presence_penalty"),
    ('{"prompt":"hi","logit_bias":{"a":1}}', "logit_bias.a"),
    ('{"prompt":"hi","logit_bias":{"1":"x"}}', "logit_bias.1"),
    ('{"prompt":"hi","logit_bias":{"999999":5}}', "logit_bias"),
    ('{"prompt":"hi","suffix":"tail"}', "suffix"),
    ('{"prompt":"hi","user":5}', "user"),
    ('{"prompt":"hi","stop_token_ids":["a"]}', "stop_token_ids.0"),
    ('{"prompt":"hi","stop_token_ids":[1.5]}', "stop_token_ids.0"),
    ('{"prompt":"hi","stop_token_ids":[-1]}', "stop_token_ids.0"),
    ('{"prompt":"hi","stop_token_ids":[1000000000000000000000000000000]}', "stop_token_ids.0"),
    ('{"prompt":"hi","stop_token_ids":[600]}', "stop_token_ids"),
    ('{"prompt":"hi","repetition_penalty":5e-324}', "repetition_penalty"),  # schemathesis found it: 1/r = inf
    ('{"prompt":"hi","best_of":3}', "best_of"),
    ('{"prompt":"hi","echo":true,"logprobs":1}', "echo"),
    ('{"prompt":"hi","n":17}', "n"),
    ('{"prompt":"hi","no_such_field":1}', "no_such_field"),
    ('{"prompt":"hi","stream_options":{"include_usage":true}}', "stream_options"),
    ('{"prompt":"hi","max_tokens":300}', "max_tokens"),
])
def test_bad_inputs_get_400_naming_the_field_and_the_engine_lives(server, raw, param):
    status, data = post(server, raw)
    assert status == 400, data
    assert error_of(400, data)["param"] == param
    assert_alive(server)


def test_fields_are_honoured(server):
    forced = json.loads(post(server, {"prompt": "x", "max_tokens": 6, "temperature": 0, "logit_bias": {"65": 100},
                                      "ignore_eos": True})[1])
    assert forced["choices"][0]["text"] == "A" * 6
    echoed = json.loads(post(server, {"prompt": "echo me", "max_tokens": 3, "echo": True})[1])
    assert echoed["choices"][0]["text"].startswith("echo me")
    body = {"prompt": ["one", "two"], "n": 2, "max_tokens": 4, "seed": 11, "temperature": 1.0, "ignore_eos": True}
    first, again = (json.loads(post(server, body)[1]) for _ in range(2))
    assert [c["index"] for c in first["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in first["choices"]] == [c["text"] for c in again["choices"]]  # seeded
    assert len({c["text"] for c in first["choices"]}) > 1  # seed + j per choice
    assert first["usage"] == {"prompt_tokens": 8, "completion_tokens": 16, "total_tokens": 24}
    lp = json.loads(post(server, {"prompt": "lp", "max_tokens": 3, "logprobs": 2, "temperature": 0,
                                  "ignore_eos": True})[1])["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 3 and all(v <= 0 for v in lp["token_logprobs"])
    assert all(len(top) <= 2 for top in lp["top_logprobs"]) and lp["text_offset"][0] == 0


def test_streams_validate_against_the_declared_models(server):
    status, data = post(server, {"prompt": "s", "max_tokens": 5, "stream": True, "n": 2, "logprobs": 1,
                                 "ignore_eos": True, "stream_options": {"include_usage": True}})
    chunks = events(data)
    for ch in chunks:
        CompletionResponse.model_validate(ch)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 10
    status, data = post(server, {"messages": [{"role": "system", "content": "be brief"},
                                              {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                 "max_completion_tokens": 4, "stream": True, "ignore_eos": True},
                        "/v1/chat/completions")
    chunks = [ChatCompletionChunk.model_validate(ch) for ch in events(data)]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_streamed_equals_not_streamed(server):
    body = {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
                         {"role": "user", "content": "again"}], "max_tokens": 6, "temperature": 0,
            "ignore_eos": True}
    whole = json.loads(post(server, body, "/v1/chat/completions")[1])
    parts = events(post(server, {**body, "stream": True}, "/v1/chat/completions")[1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in parts)
    assert whole["choices"][0]["message"]["content"] == text
    want_prompt = len(server.engine.tokenizer.encode(
        "<|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
        "\n\nhi<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nagain<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"))
    assert whole["usage"]["prompt_tokens"] == want_prompt


def test_undecodable_bytes_stream_as_replacement_characters(server):
    """Token 0x80 is a UTF-8 continuation byte: it can never complete a character."""
    data = post(server, {"prompt": "x", "max_tokens": 12, "temperature": 0, "logit_bias": {"128": 100},
                         "ignore_eos": True, "stream": True})[1]
    texts = [c["choices"][0]["text"] for c in events(data)]
    assert "".join(texts) == "\ufffd" * 12
    assert sum(bool(t) for t in texts[:-1]) >= 2  # not all held back until the end


@pytest.mark.parametrize("method,path,status", [("GET", "/nowhere", 404), ("GET", "/v1/completions", 405),
                                                ("DELETE", "/health", 405)])
def test_unknown_routes_and_methods_are_json(server, method, path, status):
    got, headers, data = request(server, method, path)
    assert got == status and headers["content-type"] == "application/json"
    error_of(status, data)


def test_oversized_body_is_413_json(server):
    status, data = post(server, json.dumps({"prompt": "x" * 70_000}))
    assert status == 413 and "larger than" in error_of(413, data)["message"]


def _raw(srv, payload: bytes, wait_s: float) -> bytes:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        sock.sendall(payload)
        time.sleep(wait_s)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out
    finally:
        sock.close()


def test_slow_headers_and_slow_bodies_get_408_and_are_closed(server):
    start = time.monotonic()
    out = _raw(server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n", 0.0)  # headers never finished
    assert out.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 8
    error_of(408, out.split(b"\r\n\r\n", 1)[1])
    out = _raw(server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 100\r\n\r\n{\"prompt\":", 0.0)  # the body never finished
    assert out.startswith(b"HTTP/1.1 408") and b"body did not arrive" in out
    assert_alive(server)


def test_connections_over_the_cap_get_503_json(server):
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(12)]
    try:
        time.sleep(0.2)
        status, headers, data = request(server, "GET", "/health", timeout=10)
        assert status == 503 and "too many open connections" in error_of(503, data)["message"]
    finally:
        for s in idle:
            s.close()
    time.sleep(0.3)
    assert_alive(server)


def test_disconnect_mid_stream_brings_gauges_back_within_a_second(server):
    metrics, name = server.engine.metrics, server.engine.model_name
    body = json.dumps({"prompt": "y" * 50, "max_tokens": 200, "stream": True, "ignore_eos": True})
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    received = b""
    while received.count(b"data: ") < 3:
        received += sock.recv(65536)
    assert metrics.running._value.get() == 1 and metrics.kv_usage._value.get() > 0
    sock.close()
    closed = time.monotonic()
    while time.monotonic() - closed < 1.0 and metrics.running._value.get() != 0:
        time.sleep(0.01)
    assert metrics.running._value.get() == 0 and metrics.kv_usage._value.get() == 0
    assert metrics.kv_usage_alias._value.get() == 0
    assert server.engine.allocator.num_free == server.engine.allocator.num_usable
