"""Fuzzing the real server: schemathesis (PyPI) against its /openapi.json, with negative data, and a hypothesis
fuzzer that mutates one field of a valid body at a time (every declared field, extreme numbers, unicode, wrong
types). No answer may be a 5xx, none may hang, every error is an OpenAI-style body, and the engine is alive after.

The schemathesis run is bounded (a fixed seed and example count) to keep CI short; GPUSLEUTH_FUZZ_EXAMPLES raises
it. Its stateful phase has nothing to chain: the API has no resources or OpenAPI links.
"""
from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_helpers import ServerThread, make_engine
from gpusleuth.engine.api.requests import ChatCompletionRequest, CompletionRequest

EXAMPLES = int(os.environ.get("GPUSLEUTH_FUZZ_EXAMPLES", "15"))
BASES = {"/v1/completions": ({"prompt": "hi", "max_tokens": 2}, CompletionRequest),
         "/v1/chat/completions": ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
                                  ChatCompletionRequest)}


@pytest.fixture(scope="module")
def server():
    engine = make_engine(max_model_len=64, max_num_seqs=16, max_num_batched_tokens=256)  # every request is short
    with ServerThread(engine) as srv:
        yield srv


def _alive(srv) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "alive?", "max_tokens": 2}),
                 headers={"Content-Type": "application/json"})
    ok = conn.getresponse().status == 200
    conn.close()
    return ok and srv.loop.is_alive


def test_schemathesis_finds_no_server_error(server, tmp_path):
    exe = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    if not Path(exe).exists():
        pytest.skip("schemathesis is not installed (the test extra)")
    cmd = [exe, "run", server.base_url + "/openapi.json", "--mode", "all", "--phases",
           "examples,coverage,fuzzing,stateful", "-n", str(EXAMPLES), "--seed", "1", "--request-timeout", "30",
           "--checks", "not_a_server_error,negative_data_rejection,response_schema_conformance,"
           "content_type_conformance", "--no-color", "--warnings", "off", "--max-failures", "5",
           "--report", "junit", "--report-dir", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=480, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-8000:] + res.stderr[-2000:]
    cases = next(line for line in res.stdout.splitlines() if "generated" in line)
    print(f"FIGURE schemathesis: {cases.strip()}")
    assert _alive(server)


def _extreme_values():
    ints = st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**400)])
    floats = st.one_of(st.sampled_from([5e-324, 1e-300, 1e-39, 1e308, -1e308, math.nan, math.inf, -0.0]),
                       st.floats(allow_nan=True, allow_infinity=True))
    texts = st.one_of(st.text(max_size=40), st.sampled_from(["\ud800", "abc\udfff", "\x00", "é" * 500, ""]))
    scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(texts, inner, max_size=3)), max_leaves=8)


def _mutations():
    cases = [(path, name) for path, (_, model) in BASES.items() for name in [*model.model_fields, "not_a_field"]]
    return st.tuples(st.sampled_from(cases), _extreme_values())


@settings(max_examples=int(os.environ.get("GPUSLEUTH_FUZZ_MUTATIONS", "300")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(_mutations())
def test_single_field_mutations_never_get_a_server_error(server, mutation):
    (path, name), value = mutation
    body = {**BASES[path][0], name: value}
    raw = json.dumps(body, allow_nan=True).encode("utf-8", errors="surrogatepass")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", path, body=raw, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert resp.status < 500, (body, data[:500])
    if resp.status >= 400:
        assert json.loads(data)["error"]["code"] == resp.status
    assert server.loop.is_alive


def test_alive_after_fuzzing(server):
    assert _alive(server)
