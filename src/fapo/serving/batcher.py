"""Dynamic batching for the local GenRM server: a queue, a batcher task and a generation thread per lane.

A `Lane` gathers waiting requests into batches of up to `max_batch` (or until the oldest has waited
`max_wait_ms`) and runs one `backend.generate` call per batch in its own worker thread, so the event
loop stays responsive. The server keeps two lanes, short and long requests, so that a request asking
for a few tokens never waits behind one asking for thousands. Requests whose client has disconnected
are dropped before they reach the backend. A batch whose generation fails is generated again one request
at a time, so that a request the backend cannot serve fails alone, never the requests batched with it.
Must not know about HTTP beyond "is this client still
there" (`fapo.serving.server` owns requests and responses) or generate text (backends do).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fapo.serving.backend import Completion, CompletionBackend, GenerationRequest
from fapo.serving.chat_api import RequestError

log = logging.getLogger(__name__)

CLIENT_GONE = 499
"""Status a request dropped because its client disconnected resolves to (nobody reads it)."""


@dataclass
class Pending:
    """A validated request waiting for, or in, a batch."""

    request: GenerationRequest
    future: asyncio.Future  # result: list[Completion], or a RequestError
    enqueued: float  # loop.time()
    client_gone: Callable[[], bool] = lambda: False


@dataclass
class LaneCounters:
    """Counters the server reports in /metrics, shared by its lanes."""

    batches: int = 0
    batched_requests: int = 0
    dropped_disconnected: int = 0


def resolve(pending: Pending, outcome: object) -> None:
    if not pending.future.done():
        pending.future.set_result(outcome)


def generate_batch(backend: CompletionBackend, requests: list[GenerationRequest]) -> list[list[Completion]]:
    """Worker-thread side of a batch: one generate call and shape checks."""
    results = backend.generate(requests)
    if len(results) != len(requests):
        raise RuntimeError(f"backend returned {len(results)} results for {len(requests)} requests")
    for request, choices in zip(requests, results, strict=True):
        if len(choices) != request.n:
            raise RuntimeError(f"backend returned {len(choices)} choices where n={request.n}")
    return results


class Lane:
    """One queue of waiting requests, its batcher task and its generation thread."""

    def __init__(self, name: str, backend: CompletionBackend, max_batch: int, max_wait_ms: float,
                 counters: LaneCounters) -> None:
        self.name = name
        self.backend = backend
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.counters = counters
        self.waiting: deque[Pending] = deque()
        self.running: list[Pending] = []
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fapo-grm-{name}")
        self.submitted: set[concurrent.futures.Future] = set()
        """Batches handed to the generation thread and not finished (read after `stop` to see it has ended)."""
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"fapo-grm-{self.name}-batcher")

    def add(self, pending: Pending) -> None:
        self.waiting.append(pending)
        self._wakeup.set()

    async def stop(self, outcome: RequestError) -> None:
        """Answer every waiting and running request with `outcome`; stop batching; leave the thread to finish."""
        for pending in [*self.waiting, *self.running]:
            resolve(pending, outcome)
        self.waiting.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _drop_gone(self) -> None:
        """Drop waiting requests whose client has disconnected: nobody would read their answer."""
        kept: deque[Pending] = deque()
        for pending in self.waiting:
            if pending.future.done():
                continue
            if pending.client_gone():
                self.counters.dropped_disconnected += 1
                resolve(pending, RequestError(CLIENT_GONE, "the client disconnected"))
            else:
                kept.append(pending)
        self.waiting = kept

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_gone()
            while not self.waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
                self._drop_gone()
            deadline = self.waiting[0].enqueued + self.max_wait
            while len(self.waiting) < self.max_batch and (remaining := deadline - loop.time()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            self._drop_gone()
            count = min(self.max_batch, len(self.waiting))
            if count == 0:
                continue
            self.running = [self.waiting.popleft() for _ in range(count)]
            await self._run_batch(self.running)
            self.running = []

    async def _run_batch(self, batch: list[Pending]) -> None:
        self.counters.batches += 1
        self.counters.batched_requests += len(batch)
        requests = [p.request for p in batch]
        work = self.executor.submit(generate_batch, self.backend, requests)
        self.submitted.add(work)
        work.add_done_callback(self.submitted.discard)
        try:
            results = await asyncio.wrap_future(work)
        except Exception as err:
            if len(batch) > 1:  # find the request that fails: each is generated alone, the others answered
                log.warning("backend failed on a batch of %d requests (%s: %s); generating them one at a time",
                            len(batch), type(err).__name__, err)
                for pending in batch:
                    if not pending.future.done():
                        await self._run_batch([pending])
                return
            log.exception("backend failed on a request")  # alone: a 500 for it, counted by the server
            resolve(batch[0], RequestError(500, f"generation failed: {type(err).__name__}: {err}"))
            return
        for pending, result in zip(batch, results, strict=True):
            resolve(pending, result)
