"""`python -m gpusleuth.engine serve` as a user runs it: TP=2 ranks over gloo from one command, a completion,
runtime fault switching over /debug/faults, spans from both ranks, and a clean exit on SIGINT.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from gpusleuth.probes.spans import wire as span_protocol


def _request(url: str, body: dict | None = None, method: str | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def span_listener(tmp_path):
    path = str(tmp_path / "spans.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    yield path, sock
    sock.close()


def test_serve_tp2_end_to_end(span_listener):
    path, sock = span_listener
    env = {**os.environ, span_protocol.SOCKET_ENV: path}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpusleuth.engine", "serve", "--preset", "tiny", "--tp", "2", "--device", "cpu",
         "--port", "0", "--cpu-threads", "1", "--max-num-seqs", "8", "--max-num-batched-tokens", "64"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://[\d.]+:(\d+)", line)
        assert match, f"no serving line, got {line!r}"
        base = f"http://127.0.0.1:{match.group(1)}"
        status, body = _request(base + "/v1/completions", {"prompt": "tp two", "max_tokens": 5, "ignore_eos": True,
                                                            "temperature": 0})
        assert status == 200 and body["usage"]["completion_tokens"] == 5
        status, faults = _request(base + "/debug/faults", {"scheduler_sleep_ms": 30}, "POST")
        assert status == 200 and faults["scheduler_sleep_ms"] == 30
        assert _request(base + "/debug/faults")[1]["scheduler_sleep_ms"] == 30
        assert _request(base + "/debug/faults", {"nope": 1}, "POST")[0] == 400
        t0 = time.monotonic()
        _request(base + "/v1/completions", {"prompt": "slow now", "max_tokens": 4, "ignore_eos": True})
        assert time.monotonic() - t0 >= 4 * 0.03  # every step slept
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    ranks = set()
    while True:
        try:
            _, spans = span_protocol.decode(sock.recv(span_protocol.MAX_DATAGRAM))
        except socket.timeout:
            break
        ranks |= {s.rank for s in spans if s.kind == "step"}
    assert ranks == {0, 1}  # both ranks report their steps (straggler diagnosis needs every rank)
