"""The load generator (comm `gs-load`): streaming completions at a fixed arrival process, plus bursts on command.

`python load.py --url URL --rate R --out FILE`: one request every 1/R s (periodic, so every window sees the same
arrivals), each a prompt of `--prompt-tokens` seeded random token ids and `--max-tokens` output tokens (EOS ignored,
so every request does the same work). A JSON line on stdin adds a burst: {"burst": N, "prompt_tokens": P,
"max_tokens": M, "tag": "kv"}. FILE gets a line {"event": "sent", seq, t_send_ns} as each request leaves and one
{"event": "done", ...} when it ends: id (the engine's request id), tag, t_send_ns / t_first_ns / t_done_ns
(CLOCK_MONOTONIC, the agent's clock), output tokens, HTTP status, error.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

import aiohttp

from actors import set_comm


class Load:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.rng = random.Random(a.seed)
        self.out = open(a.out, "a", buffering=1)
        self.tasks: set[asyncio.Task] = set()
        self.num_sent = 0
        self.session: aiohttp.ClientSession | None = None

    def prompt(self, n: int) -> list[int]:
        return [self.rng.randrange(3, self.a.vocab) for _ in range(n)]

    async def one(self, prompt_tokens: int, max_tokens: int, tag: str) -> None:
        body = {"model": self.a.model, "prompt": self.prompt(prompt_tokens), "max_tokens": max_tokens,
                "ignore_eos": True, "stream": True, "temperature": 0.0}
        self.num_sent += 1
        rec = {"event": "done", "seq": self.num_sent, "id": None, "tag": tag, "t_send_ns": time.monotonic_ns(),
               "t_first_ns": None, "t_done_ns": None, "output_tokens": 0, "status": None, "error": None}
        self.out.write(json.dumps({"event": "sent", "seq": rec["seq"], "t_send_ns": rec["t_send_ns"]}) + "\n")
        try:
            async with self.session.post(self.a.url + "/v1/completions", json=body) as resp:
                rec["status"] = resp.status
                async for line in resp.content:
                    if not line.startswith(b"data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    rec["id"] = rec["id"] or chunk.get("id")
                    if chunk.get("choices"):
                        rec["output_tokens"] += 1
                        rec["t_first_ns"] = rec["t_first_ns"] or time.monotonic_ns()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["t_done_ns"] = time.monotonic_ns()
        self.out.write(json.dumps(rec) + "\n")

    def spawn(self, *args) -> None:
        task = asyncio.get_running_loop().create_task(self.one(*args))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def arrivals(self) -> None:
        """Periodic arrivals on absolute deadlines, so a slow engine never shifts later arrivals."""
        period, t0, n = 1.0 / self.a.rate, time.monotonic(), 0
        while True:
            self.spawn(self.a.prompt_tokens, self.a.max_tokens, "steady")
            n += 1
            await asyncio.sleep(max(0.0, t0 + n * period - time.monotonic()))

    async def commands(self) -> None:
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            cmd = json.loads(line)
            for _ in range(int(cmd.get("burst", 0))):
                self.spawn(cmd.get("prompt_tokens", self.a.prompt_tokens), cmd.get("max_tokens", self.a.max_tokens),
                           cmd.get("tag", "burst"))

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.a.timeout_s)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as self.session:
            print(json.dumps({"ready": True}), flush=True)
            await asyncio.gather(self.arrivals(), self.commands())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--model", default="tiny")
    p.add_argument("--rate", type=float, default=5.0)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    set_comm("gs-load")
    asyncio.run(Load(a).run())


if __name__ == "__main__":
    main()
