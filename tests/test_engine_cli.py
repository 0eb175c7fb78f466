"""`python -m gpusleuth.engine serve` as a user runs it: TP=2 ranks over gloo from one command, a completion,
runtime fault switching over /debug/faults, spans from both ranks (each from its step thread, named in /proc), and a
clean exit on SIGINT.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
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
    """(socket path, [(sender pid, span)] so far): drained by a thread as the engine sends."""
    path = str(tmp_path / "spans.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    got, stop = [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                pid, spans = span_protocol.decode(sock.recv(span_protocol.MAX_DATAGRAM))
            except socket.timeout:
                continue
            got.extend((pid, s) for s in spans)

    reader = threading.Thread(target=read)
    reader.start()
    yield path, got
    stop.set()
    reader.join()
    sock.close()


def _comm(pid: int, tid: int | None = None) -> str:
    return Path(f"/proc/{pid}" + (f"/task/{tid}" if tid else "") + "/comm").read_text().strip()


def test_serve_tp2_end_to_end(span_listener):
    path, got = span_listener
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
        steps = {}  # rank -> (pid, step span) of its last step
        for pid, span in list(got):
            if span.phase == "step":
                steps[span.rank] = (pid, span)
        assert sorted(steps) == [0, 1]  # both ranks report their steps (straggler diagnosis needs every rank)
        (pid0, step0), (pid1, step1) = steps[0], steps[1]
        assert (pid0, _comm(pid0), _comm(pid0, step0.attrs["tid"])) == (proc.pid, "gs-engine", "gs-step")
        assert (_comm(pid1), _comm(pid1, step1.attrs["tid"])) == ("gs-engine-r1", "gs-step-r1")
        rank0 = {s.attrs["step_id"]: s for p, s in got if s.phase == "step" and s.rank == 0}
        for _, s in (x for x in got if x[1].phase == "step" and x[1].rank == 1):  # joined to rank 0 by step_id
            shape = ("num_decode", "num_prefill", "num_prefill_tokens")
            assert [s.attrs[k] for k in shape] == [rank0[s.attrs["step_id"]].attrs[k] for k in shape]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()

