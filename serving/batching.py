"""Natural batching: the requests that arrive while a batch is being scored are scored
together, as the next batch.

A worker scores one batch at a time, on its event loop: before a batch starts, the loop runs a
few more iterations (``GATHER_ITERATIONS``) so requests already in the sockets join it, then
the batch runs without handing the GIL to another thread (with the batch in a worker thread
``bench/bench_serving.py`` measured 376-450 req/s with 8 clients, against 550 on the loop:
each hand-off waits for Python's switch interval). The loop is blocked while a batch runs
(milliseconds; longer only if a card lock is held elsewhere, up to the lock's wait).

A lone request waits only those few iterations (microseconds); under load the requests queue
behind the running batch and then go in together, so the batch grows with the load and the
fixed costs of a scoring (the online-store read, the ensemble's forward, the write-through,
the journal write) are paid once per batch instead of once per request. BentoML's adaptive
batching is not used: it batches one argument of single items and holds requests to fill a
batch (by its latency model), and this endpoint takes a list of payments and an ``explain``
flag per request.

A request whose task was cancelled before its batch started is dropped from the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

GATHER_ITERATIONS = 10
Job = TypeVar("Job")
Result = TypeVar("Result")


class NaturalBatcher(Generic[Job, Result]):
    """Runs ``work(jobs) -> results`` (one result per job, same order) on the loop, one batch
    at a time, on the jobs submitted since the previous batch started (at most ``max_jobs``)."""

    def __init__(self, work: Callable[[list[Job]], list[Result]], max_jobs: int = 64) -> None:
        self.work = work
        self.max_jobs = max_jobs
        self._pending: list[tuple[Job, asyncio.Future[Result]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, job: Job) -> Result:
        """``job``'s result, once a batch holding it ran; ``work``'s exception if it raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((job, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            for _ in range(GATHER_ITERATIONS):
                await asyncio.sleep(0)
            taken = self._pending[: self.max_jobs]
            del self._pending[: self.max_jobs]
            taken = [(job, future) for job, future in taken if not future.done()]
            if not taken:
                continue
            try:
                results = self.work([job for job, _ in taken])
            except Exception as exc:
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(taken, results, strict=True):
                if not future.done():
                    future.set_result(result)
