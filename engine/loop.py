"""The scheduler thread: steps the engine while there is work; HTTP handlers reach it only through an inbox.

Commands (add, abort, set faults) are applied between steps, so the engine itself needs no locks. Each step's
updates go back to the asyncio loop in one call_soon_threadsafe.

Isolation: a request that fails while it is added fails alone (RequestFailed: 400 when its parameters caused it,
500 otherwise), and so does one whose sampling fails (the engine finishes it with reason "error"). Only a step
that raises (the model itself: a CUDA error) means the engine cannot continue: the loop marks itself dead, fails
every open request with EngineDead and calls `on_fatal` (the server answers 503 and the process exits non-zero).

The thread calls itself `gs-step` (probes/procname.py) and sends an "idle" span for each wait for work (at most
0.5 s each, so a long idle period shows while it lasts): on this thread, time in neither a step nor an idle span
while requests are in flight is a stall. A request's queued phase starts when `submit` hands it over, so a step
loop that is slow to pick up its inbox shows as queueing time.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import Callable

import torch

from gpusleuth.engine.engine import LLMEngine
from gpusleuth.engine.faults import FaultConfig
from gpusleuth.engine.outputs import RequestOutput
from gpusleuth.engine.sequence import SamplingError, SamplingParams
from gpusleuth.probes import procname

log = logging.getLogger("gpusleuth.engine")


class QueueFull(Exception):
    """Too many requests waiting; the server answers 429 with Retry-After."""


class EngineDead(Exception):
    """The step loop stopped (crash or shutdown); the server answers 503."""


class RequestFailed(Exception):
    """One request could not be added to the engine; `status` 400 when its parameters caused it (`param`)."""

    def __init__(self, message: str, param: str | None = None, status: int = 500) -> None:
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


class EngineLoop:
    def __init__(self, engine: LLMEngine, max_waiting: int) -> None:
        self.engine = engine
        self.max_waiting = max_waiting
        self.error = ""
        self._inbox: collections.deque[Callable[[], None]] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._streams: dict[str, asyncio.Queue] = {}
        self._aio: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="gpusleuth-scheduler", daemon=True)
        self.on_fatal: Callable[[], None] | None = None  # on the asyncio loop, after open requests were failed

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self.error and not self._stop.is_set()

    @property
    def num_waiting(self) -> int:
        return len(self._inbox) + self.engine.num_waiting

    @property
    def step_tid(self) -> int | None:
        """Native thread id of the step thread (None before it starts)."""
        return self._thread.native_id

    def start(self, aio_loop: asyncio.AbstractEventLoop) -> None:
        self._aio = aio_loop
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    # ---- called from the asyncio thread ---------------------------------------------------------------------
    def submit(self, request_id: str, prompt_ids: list[int], params: SamplingParams, received_ns: int = 0,
               arrival_ns: int = 0, queue: asyncio.Queue | None = None) -> asyncio.Queue:
        """Queue a request; its RequestOutputs arrive on the returned queue (`queue`, or a new one: the choices of
        one HTTP request share one), the last with is_finished; or RequestFailed / EngineDead.
        `received_ns`: when the server had it (start of its "received" span); `arrival_ns` (default now): when it
        is handed over (end of "received", start of "queued")."""
        if not self.is_alive:
            raise EngineDead(self.error or "the engine is shutting down")
        if self.num_waiting >= self.max_waiting:
            raise QueueFull(f"{self.num_waiting} requests are waiting (max_waiting={self.max_waiting})")
        self.engine.check_request(prompt_ids, params)  # pure validation: safe off the scheduler thread
        queue = asyncio.Queue() if queue is None else queue
        self._streams[request_id] = queue
        arrival_ns = arrival_ns or time.monotonic_ns()
        self._post(lambda: self._add(request_id, prompt_ids, params, arrival_ns, received_ns))
        return queue

    def abort(self, request_id: str) -> None:
        self._streams.pop(request_id, None)
        self._post(lambda: self.engine.abort(request_id))

    def set_faults(self, config: FaultConfig) -> None:
        self._post(lambda: self.engine.set_faults(config))

    def _post(self, command: Callable[[], None]) -> None:
        self._inbox.append(command)
        self._wake.set()

    # ---- the scheduler thread -------------------------------------------------------------------------------
    def _add(self, request_id: str, prompt_ids: list[int], params: SamplingParams, arrival_ns: int,
             received_ns: int) -> None:
        if request_id not in self._streams:  # aborted meanwhile
            return
        try:
            self.engine.add_request(request_id, prompt_ids, params, arrival_ns, received_ns)
        except SamplingError as exc:  # checked on submit already; a duplicate id is all that is left
            log.warning("request %s refused: %s", request_id, exc)
            self._aio.call_soon_threadsafe(self._fail_one, request_id, RequestFailed(exc.message, exc.param, 400))
        except Exception as exc:  # preparing one request (its generator, tokens) must not stop the loop
            log.exception("request %s could not be added", request_id)
            self._aio.call_soon_threadsafe(self._fail_one, request_id, RequestFailed(
                f"the engine could not start this request: {exc!r}"))

    def _run(self) -> None:
        procname.set_thread_name(procname.STEP)
        device = self.engine.runner.device
        if device.type == "cuda":
            torch.cuda.set_device(device)  # the current device is per thread; graphs and NCCL run from here
        try:
            while not self._stop.is_set():
                while self._inbox:
                    self._inbox.popleft()()
                if not self.engine.has_work:
                    self._idle()
                    continue
                outs = self.engine.step()
                if outs:
                    self._aio.call_soon_threadsafe(self._deliver, outs)
            self._notify(self._fail_all, "the engine is shutting down")
        except Exception as exc:  # the step loop must report any failure to waiting clients, then stop
            log.exception("engine step failed")
            self.error = f"engine step failed: {exc!r}"
            self._aio.call_soon_threadsafe(self._fail_all, self.error)
            if self.on_fatal is not None:
                self._aio.call_soon_threadsafe(self.on_fatal)

    def _notify(self, fn: Callable, *args) -> None:
        try:
            self._aio.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the asyncio loop has closed already: nobody is left to tell
            pass

    def _idle(self) -> None:
        start = time.monotonic_ns()
        self._wake.wait(timeout=0.5)
        self._wake.clear()
        emitter = self.engine.emitter
        emitter.add("step", "idle", "idle", start, time.monotonic_ns(), tid=threading.get_native_id())
        emitter.flush()

    def _deliver(self, outs: list[RequestOutput]) -> None:
        for out in outs:
            queue = self._streams.get(out.request_id)
            if queue is None:
                continue
            queue.put_nowait(out)
            if out.is_finished:
                del self._streams[out.request_id]

    def _fail_one(self, request_id: str, exc: RequestFailed) -> None:
        queue = self._streams.pop(request_id, None)
        if queue is not None:
            queue.put_nowait(exc)

    def _fail_all(self, message: str) -> None:
        for queue in self._streams.values():
            queue.put_nowait(EngineDead(message))
        self._streams.clear()
