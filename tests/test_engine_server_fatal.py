"""When the engine itself cannot continue (its step raises, as a CUDA error does), the real `serve` process fails
the requests in flight with a clear error, answers /health with 503, and exits non-zero so systemd or Kubernetes
restarts it. The failing step is injected into ModelRunner.execute: a CUDA error is a hardware boundary CI cannot
reach."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

FAILING_ENGINE = r"""
import sys
from gpusleuth.engine import cli, runner
execute, calls = runner.ModelRunner.execute, [0]
def failing(self, inp):
    calls[0] += 1
    if calls[0] > 4:  # a few steps in: requests are in flight
        raise RuntimeError("CUDA error: an illegal memory access was encountered (injected by the test)")
    return execute(self, inp)
runner.ModelRunner.execute = failing
sys.exit(cli.main(sys.argv[1:]))
"""


def _post(base: str, body: dict):
    req = urllib.request.Request(base + "/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_engine_failure_fails_in_flight_requests_then_exits_non_zero():
    proc = subprocess.Popen([sys.executable, "-c", FAILING_ENGINE, "serve", "--preset", "tiny", "--device", "cpu",
                             "--port", "0", "--cpu-threads", "1", "--no-spans"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        match = re.search(r"http://[\d.]+:(\d+)", proc.stdout.readline())
        assert match, proc.stderr.read()
        base = f"http://127.0.0.1:{match.group(1)}"
        status, body = _post(base, {"prompt": "doomed", "max_tokens": 50, "ignore_eos": True, "stream": True})
        assert status == 200 and '"error"' in body and "illegal memory access" in body  # failed mid-stream
        assert body.rstrip().endswith("data: [DONE]")
        status, body = _post(base, {"prompt": "after", "max_tokens": 2})
        assert status == 503 and "engine step failed" in json.loads(body)["error"]["message"]
        try:
            urllib.request.urlopen(base + "/health", timeout=10)
            health = 200
        except urllib.error.HTTPError as exc:
            health, detail = exc.code, json.loads(exc.read())
        assert health == 503 and detail["status"] == "dead"
        start = time.monotonic()
        code = proc.wait(timeout=30)
        assert code == 1, code
        assert time.monotonic() - start < 10
        assert "illegal memory access" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
