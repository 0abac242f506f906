"""Micro-batching for the KServe host: concurrent calls are gathered into one ``ExplainService.answer``
call (one engine call per batch), as TorchServe's frontend batches for its workers.

Each engine worker owns its own ``ExplainService`` (engine, caches) and one thread, like a TorchServe worker
process; all workers take batches from one queue: the first request waits at most ``max_delay_s`` for others, a
batch holds at most ``max_batch_size`` requests, and requests that arrive while every worker is busy form the next
batch at once. At most ``max_queued`` requests wait (TorchServe's ``job_queue_size``); one more is answered at once
with UNAVAILABLE, "overloaded, retry", as TorchServe answers its full queue, and ``Retry-After``: the time the
queue takes to drain at the rate answers came back lately (galore_wire.backpressure). (KServe's own batcher is a
sidecar of the InferenceService, not part of the Python ModelServer; see BENCHMARKS.md "Two hosts".)
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from galore.errors import Unavailable
from galore_service.calls import Answer, Request
from galore_service.metrics import WorkerMetrics
from galore_service.service import ExplainService
from galore_wire.backpressure import DrainEstimate
from galore_wire.status import overloaded

from .archive import Batching

logger = logging.getLogger(__name__)
DEFAULT_JOB_QUEUE_SIZE = 100  # TorchServe's default job_queue_size; make serve passes deploy/torchserve's (24)


@dataclass
class Pending:
    request: Request
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(self, services: list[ExplainService], metrics: WorkerMetrics, batching: Batching,
                 max_queued: int = DEFAULT_JOB_QUEUE_SIZE):
        if not services:
            raise ValueError("at least one engine worker is needed")
        if max_queued < 1:
            raise ValueError(f"max_queued must be >= 1, got {max_queued}")
        self.max_queued = max_queued
        self.services = services
        self.metrics = metrics
        self.batching = batching
        self.drain = DrainEstimate()
        self._queue: asyncio.Queue[Pending] | None = None
        self._workers: list[asyncio.Task] = []
        self._executors = [ThreadPoolExecutor(1, thread_name_prefix=f"galore-engine-{i}")
                           for i in range(len(services))]

    def _start(self) -> None:
        self._queue = asyncio.Queue()
        self._workers = [asyncio.create_task(self._work(service, executor), name=f"galore-batcher-{i}")
                         for i, (service, executor) in enumerate(zip(self.services, self._executors))]

    async def submit(self, request: Request) -> Answer:
        """Queues one call; returns its Answer once its batch has run."""
        if self._queue is None:
            self._start()
        if self._queue.qsize() >= self.max_queued:
            self.metrics.dropped("queue_full")
            return self.services[0].refuse(request, Unavailable("", overloaded(
                f"the KServe host's job queue is full, job_queue_size={self.max_queued}")), self.metrics,
                retry_after=self.drain.retry_after(self._queue.qsize()))
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(Pending(request, future))
        return await future

    async def _gather(self) -> list[Pending]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        due = loop.time() + self.batching.max_delay_s
        while len(batch) < self.batching.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = due - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _work(self, service: ExplainService, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [p for p in batch if not p.future.done()]  # a caller that went away costs nothing
            if not live:
                continue
            try:
                answers = await loop.run_in_executor(
                    executor, service.answer, [p.request for p in live], self.metrics)
            except Exception as exc:  # answer isolates failures; this is a last resort
                logger.exception("batch of %d requests failed", len(live))
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            for p, answer in zip(live, answers):
                self.drain.completed()
                if not p.future.done():
                    p.future.set_result(answer)

    def close(self) -> None:
        for task in self._workers:
            task.cancel()
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)
