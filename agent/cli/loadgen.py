"""A small open-loop load generator for the bundled engine: Poisson arrivals of random prompts (stdlib only).
Its threads call themselves `gs-load` (probes/procname.py), so the agent tells the load apart from what it loads."""
from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from gpusleuth.probes import procname

WORDS = ("gpu", "kernel", "latency", "tensor", "batch", "token", "cache", "request", "socket", "queue", "model",
         "decode", "prefill", "rank", "stream", "page", "block", "throttle", "burst", "syscall")


@dataclass(slots=True)
class LoadStats:
    sent: int = 0
    ok: int = 0
    rejected: int = 0  # 429/503: the engine's bounded queue said no
    failed: int = 0
    last_error: str = ""
    latencies_s: list[float] = field(default_factory=list)


class LoadGenerator:
    """Sends /v1/completions at `rate_per_s` (Poisson) from a few worker threads until stopped."""

    def __init__(self, base_url: str, rate_per_s: float = 4.0, max_tokens: tuple[int, int] = (8, 48),
                 prompt_words: tuple[int, int] = (4, 64), num_workers: int = 8, seed: int = 0) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/v1/completions"
        self.model = ""
        self.rate = rate_per_s
        self.max_tokens = max_tokens
        self.prompt_words = prompt_words
        self.stats = LoadStats()
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._sem = threading.Semaphore(num_workers)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with urllib.request.urlopen(self.base_url + "/v1/models", timeout=10) as resp:
            self.model = json.load(resp)["data"][0]["id"]
        self._thread = threading.Thread(target=self._arrivals, name="loadgen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _arrivals(self) -> None:
        procname.set_thread_name(procname.LOAD)  # the request threads it starts inherit the name
        while not self._stop.wait(self._rng.expovariate(self.rate)):
            if not self._sem.acquire(blocking=False):
                continue  # all workers busy: an open loop drops rather than queueing unboundedly here
            body = {"model": self.model, "prompt": " ".join(self._rng.choice(WORDS) for _ in range(
                self._rng.randint(*self.prompt_words))), "max_tokens": self._rng.randint(*self.max_tokens),
                "temperature": 0.0}
            threading.Thread(target=self._one, args=(body,), daemon=True).start()

    def _one(self, body: dict) -> None:
        t0 = time.monotonic()
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                json.load(resp)
            outcome = "ok"
        except urllib.error.HTTPError as exc:
            outcome = "rejected" if exc.code in (429, 503) else "failed"
            self.stats.last_error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            outcome = "failed"
            self.stats.last_error = str(exc)
        finally:
            self._sem.release()
        with self._lock:
            self.stats.sent += 1
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
            if outcome == "ok":
                self.stats.latencies_s.append(time.monotonic() - t0)
