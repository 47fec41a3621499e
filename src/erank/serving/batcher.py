"""A cross-request micro-batching queue in front of one model worker thread.

Requests submit *jobs* (lists of work items, e.g. the tokenised prompts of their (query,
document) pairs). One worker thread owns the model: it takes the items of every waiting job, up
to ``max_batch_items`` (and ``max_batch_weight``, e.g. prompt tokens), waiting at most
``max_wait_s`` for more to arrive, scores them with one call of ``scorer`` and hands each job its
slice back through its event loop. The event loop never blocks.

Fairness: each call serves first the jobs that have had the least weight scored so far, so a
small request that arrives behind a large one goes into the very next call instead of waiting
for the large one to finish. A job cancelled (client gone, timeout) loses its items not yet
taken at once; the call already running is the only work of it still done, and that call is
bounded by ``max_batch_weight``.

>>> import asyncio
>>> from erank.serving.batcher import MicroBatcher
>>> b = MicroBatcher(lambda items, key: [x * 2 for x in items], max_batch_items=8, max_wait_s=0.001)
>>> b.start()
>>> async def main():
...     jobs = [b.submit([i, i + 1]) for i in range(3)]
...     return [await j.future for j in jobs]
>>> asyncio.run(main())
[[0, 2], [2, 4], [4, 6]]
>>> b.stop()
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["MicroBatcher", "Job", "QueueFullError", "BatcherStoppedError"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class QueueFullError(Exception):
    """The queue holds ``max_queue`` jobs already (the HTTP layer answers 429)."""


class BatcherStoppedError(Exception):
    """The batcher is shutting down and accepts no new work (the HTTP layer answers 503)."""


@dataclass(eq=False)
class Job(Generic[T, R]):
    """One request's items, their results as they come in, and the future that delivers them."""

    items: Sequence[T]
    key: Hashable
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[R]]
    weights: Sequence[int] | None = None
    results: list[Any] = field(default_factory=list)
    next_index: int = 0
    taken_weight: int = 0
    done_items: int = 0
    cancelled: bool = False
    finished: bool = False
    enqueued: float = field(default_factory=time.monotonic)


BatchObserver = Callable[[int, int, float], None]


class MicroBatcher(Generic[T, R]):
    """Batches the items of concurrent jobs into one ``scorer`` call in a worker thread.

    Args:
        scorer: ``scorer(items, key) -> results`` (one result per item, in order); runs in the
            worker thread. Items of jobs with different ``key`` never share a call.
        max_batch_items: items per call at most (a larger job is split over several calls).
        max_batch_weight: the items' weights (``submit(weights=...)``) per call at most; a call
            holds at least one item whatever its weight. ``None``: no limit.
        max_wait_s: how long to wait for more items when fewer than ``max_batch_items`` wait.
        max_queue: jobs waiting or running at most; :meth:`submit` raises
            :class:`QueueFullError` beyond.
        cross_request: ``False`` scores one job per call (no batching across requests).
        on_batch: ``on_batch(items, jobs, seconds)`` after each call (metrics).
    """

    def __init__(
        self,
        scorer: Callable[[list[T], Hashable], list[R]],
        *,
        max_batch_items: int = 64,
        max_batch_weight: int | None = None,
        max_wait_s: float = 0.005,
        max_queue: int = 256,
        cross_request: bool = True,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self.scorer = scorer
        self.max_batch_items = max_batch_items
        self.max_batch_weight = max_batch_weight
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.cross_request = cross_request
        self.on_batch = on_batch
        self._pending: list[Job[T, R]] = []
        self._outstanding = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ state
    @property
    def outstanding(self) -> int:
        """Jobs submitted and not finished (waiting or being scored)."""
        return self._outstanding

    @property
    def pending_items(self) -> int:
        """Items not yet handed to the scorer."""
        with self._cond:
            return self._pending_items()

    def _pending_items(self) -> int:
        return sum(len(j.items) - j.next_index for j in self._pending if not j.cancelled)

    def _batch_is_full(self) -> bool:
        if self._pending_items() >= self.max_batch_items:
            return True
        if self.max_batch_weight is None:
            return False
        weight = 0
        for j in self._pending:
            if not j.cancelled:
                weight += sum(_weights(j)[j.next_index :])
        return weight >= self.max_batch_weight

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="erank-model-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the jobs already submitted, then stop the worker (new submits are refused)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # ------------------------------------------------------------------ submit/cancel
    def submit(
        self,
        items: Sequence[T],
        key: Hashable = None,
        loop: asyncio.AbstractEventLoop | None = None,
        weights: Sequence[int] | None = None,
    ) -> Job[T, R]:
        """Queue ``items``; ``await job.future`` gives their results in order (from a coroutine).

        ``weights``: one per item (prompt tokens, say), for ``max_batch_weight``; default 1 each.
        """
        if weights is not None and len(weights) != len(items):
            raise ValueError(f"{len(weights)} weights for {len(items)} items")
        loop = loop or asyncio.get_running_loop()
        job: Job[T, R] = Job(items=items, key=key, loop=loop, future=loop.create_future(), weights=weights)
        job.results = [None] * len(items)
        with self._cond:
            if self._stopping:
                raise BatcherStoppedError("the server is shutting down")
            if self._outstanding >= self.max_queue:
                raise QueueFullError(f"the queue is full ({self.max_queue} requests waiting or running)")
            self._outstanding += 1
            if not items:
                self._finish(job)
                _resolve(job, [])
                return job
            self._pending.append(job)
            self._cond.notify_all()
        return job

    def cancel(self, job: Job[T, R]) -> None:
        """Drop the job's items that the scorer has not taken yet (client gone, timeout)."""
        with self._cond:
            if job.finished:
                return
            job.cancelled = True
            if job in self._pending:
                self._pending.remove(job)
            self._finish(job)
        _call_in_loop(job.loop, _cancel_future, job.future)

    def _finish(self, job: Job[T, R]) -> None:
        # called with the lock held
        if not job.finished:
            job.finished = True
            self._outstanding -= 1

    # ------------------------------------------------------------------ worker
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending and self._stopping:
                    return
                if self.cross_request and self.max_wait_s > 0:
                    deadline = time.monotonic() + self.max_wait_s
                    while not self._batch_is_full() and not self._stopping:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                batch = self._take()
            if batch:
                self._run(batch)

    def _take(self) -> list[tuple[Job[T, R], int, int]]:
        """Slices ``(job, start, end)`` for the next call (lock held).

        Jobs are served least-served first (the weight already scored for them, then arrival), so
        a job never waits behind more than one call of an earlier, larger one.
        """
        self._pending = [j for j in self._pending if not j.cancelled]
        if not self._pending:
            return []
        order = sorted(self._pending, key=lambda j: (j.taken_weight, j.enqueued))
        batch: list[tuple[Job[T, R], int, int]] = []
        budget = self.max_batch_items
        weight_left = self.max_batch_weight
        key: Hashable = order[0].key
        # A call that serves a job for the first time does not also carry more of jobs already
        # served: a newcomer's call is no longer than it needs to be.
        newcomer = order[0].taken_weight == 0
        for job in order:
            if job.key != key or (newcomer and job.taken_weight > 0 and batch):
                continue
            weights = _weights(job)
            start = end = job.next_index
            while end < len(job.items):
                if self.cross_request and end - start >= budget:
                    break
                w = weights[end]
                if (
                    self.cross_request
                    and weight_left is not None
                    and w > weight_left
                    and (batch or end > start)
                ):
                    break
                end += 1
                job.taken_weight += w
                if weight_left is not None:
                    weight_left -= w
            if end > start:
                batch.append((job, start, end))
                job.next_index = end
                budget -= end - start
            if job.next_index >= len(job.items):
                self._pending.remove(job)
            if not self.cross_request or budget <= 0 or (weight_left is not None and weight_left <= 0):
                break
        return batch

    def _run(self, batch: list[tuple[Job[T, R], int, int]]) -> None:
        items: list[T] = [it for job, s, e in batch for it in job.items[s:e]]
        key = batch[0][0].key
        start = time.perf_counter()
        try:
            results = self.scorer(items, key)
            if len(results) != len(items):
                raise RuntimeError(f"the scorer returned {len(results)} results for {len(items)} items")
        except BaseException as exc:  # noqa: BLE001 - delivered to every waiting request
            logger.exception("scoring a batch of %d items failed", len(items))
            with self._cond:
                for job, _, _ in batch:
                    job.cancelled = True
                    if job in self._pending:
                        self._pending.remove(job)
                    if not job.finished:
                        self._finish(job)
                        _call_in_loop(job.loop, _fail_future, job.future, exc)
            return
        seconds = time.perf_counter() - start
        if self.on_batch is not None:
            try:
                self.on_batch(len(items), len(batch), seconds)
            except Exception:  # noqa: BLE001 - metrics never break scoring
                logger.exception("batch observer failed")
        offset = 0
        with self._cond:
            for job, s, e in batch:
                job.results[s:e] = results[offset : offset + (e - s)]
                offset += e - s
                job.done_items += e - s
                if job.done_items >= len(job.items) and not job.finished:
                    self._finish(job)
                    _resolve(job, job.results)


def _weights(job: Job[Any, Any]) -> Sequence[int]:
    return job.weights if job.weights is not None else [1] * len(job.items)


def _resolve(job: Job[Any, Any], value: list[Any]) -> None:
    _call_in_loop(job.loop, _set_future, job.future, value)


def _call_in_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nobody waits for this result any more
        logger.debug("event loop closed before a result was delivered")


def _set_future(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail_future(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _cancel_future(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.cancel()
