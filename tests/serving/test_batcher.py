"""The micro-batching queue itself: real threads and a real event loop, a plain Python scorer."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from erank.serving.batcher import BatcherStoppedError, MicroBatcher, QueueFullError


class Recorder:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[list[int]] = []
        self.gate = gate

    def __call__(self, items: list[int], key: object) -> list[int]:
        if self.gate is not None:
            self.gate.wait(10)
        self.calls.append(list(items))
        return [x * 10 for x in items]


def test_concurrent_jobs_share_one_call() -> None:
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_items=64, max_wait_s=0.05)
    b.start()

    async def main() -> list[list[int]]:
        jobs = [b.submit(list(range(i * 5, i * 5 + 5))) for i in range(8)]
        return list(await asyncio.gather(*(j.future for j in jobs)))

    out = asyncio.run(main())
    b.stop()
    assert out == [[x * 10 for x in range(i * 5, i * 5 + 5)] for i in range(8)]
    assert len(rec.calls) == 1 and len(rec.calls[0]) == 40  # 8 requests, one scorer call


def test_large_job_split_and_without_cross_batching_one_job_per_call() -> None:
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_items=16, max_wait_s=0.0)
    b.start()

    async def one(items: list[int]) -> list[int]:
        return list(await b.submit(items).future)

    assert asyncio.run(one(list(range(40)))) == [x * 10 for x in range(40)]
    b.stop()
    assert [len(c) for c in rec.calls] == [16, 16, 8]

    rec2 = Recorder()
    b2 = MicroBatcher(rec2, max_batch_items=64, max_wait_s=0.05, cross_request=False)
    b2.start()

    async def many() -> None:
        jobs = [b2.submit([i, i]) for i in range(5)]
        await asyncio.gather(*(j.future for j in jobs))

    asyncio.run(many())
    b2.stop()
    assert [len(c) for c in rec2.calls] == [2] * 5


def test_cancelled_job_is_never_scored_and_queue_limit() -> None:
    gate = threading.Event()
    rec = Recorder(gate)
    b = MicroBatcher(rec, max_batch_items=4, max_wait_s=0.0, max_queue=2)
    b.start()

    async def main() -> None:
        first = b.submit([1, 2, 3, 4])  # taken by the worker, which waits at the gate
        await asyncio.sleep(0.1)
        second = b.submit([5, 6])
        with pytest.raises(QueueFullError):
            b.submit([7])
        b.cancel(second)  # the client went away before its pairs were scheduled
        assert b.outstanding == 1
        third = b.submit([8])  # room again
        gate.set()
        assert await first.future == [10, 20, 30, 40]
        assert await third.future == [80]
        with pytest.raises(asyncio.CancelledError):
            await second.future

    asyncio.run(main())
    b.stop()
    assert [5, 6] not in rec.calls and all(5 not in c for c in rec.calls)
    with pytest.raises(BatcherStoppedError):
        asyncio.run(_submit(b))


async def _submit(b: MicroBatcher) -> None:
    b.submit([1])


def test_scorer_failure_reaches_the_requests_and_the_worker_survives() -> None:
    def scorer(items: list[int], key: object) -> list[int]:
        if 13 in items:
            raise ValueError("bad item")
        return items

    b = MicroBatcher(scorer, max_batch_items=8, max_wait_s=0.0)
    b.start()

    async def main() -> None:
        with pytest.raises(ValueError, match="bad item"):
            await b.submit([13]).future
        assert await b.submit([1, 2]).future == [1, 2]
        assert b.outstanding == 0

    asyncio.run(main())
    b.stop()


def test_keys_never_mix() -> None:
    rec_keys: list[tuple[object, int]] = []

    def scorer(items: list[int], key: object) -> list[int]:
        rec_keys.append((key, len(items)))
        return items

    b = MicroBatcher(scorer, max_batch_items=64, max_wait_s=0.05)
    b.start()

    async def main() -> None:
        jobs = [b.submit([i], key=("pairs", i % 2 == 0)) for i in range(6)]
        await asyncio.gather(*(j.future for j in jobs))

    asyncio.run(main())
    b.stop()
    assert sorted(rec_keys, key=str) == [(("pairs", False), 3), (("pairs", True), 3)]


def test_a_small_job_behind_a_large_one_goes_into_the_next_call_alone() -> None:
    """Weights bound a call (max_batch_weight); the least-served job goes first; a newcomer's call
    carries nothing more of a job already served; a cancelled job's untaken items are dropped."""
    started = threading.Event()
    release = threading.Event()
    calls: list[list[int]] = []

    def scorer(items: list[int], key: object) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            started.set()
            release.wait(10)
        else:
            time.sleep(0.05)  # a model call takes time
        return items

    b = MicroBatcher(scorer, max_batch_items=1000, max_batch_weight=50, max_wait_s=0.0)
    b.start()

    async def main() -> tuple[list[int], bool]:
        big = b.submit(list(range(100)), weights=[10] * 100)  # 1000 weight: 20 calls of 50
        await asyncio.to_thread(started.wait, 10)
        small = b.submit([1000, 1001], weights=[10, 10])
        release.set()
        got = await small.future
        b.cancel(big)  # the big one times out: what it had not been given is dropped
        await asyncio.sleep(0.05)
        return got, big.future.cancelled()

    got, cancelled = asyncio.run(main())
    b.stop()
    assert got == [1000, 1001] and cancelled
    assert calls[0] == list(range(5))  # 5 items x 10 = the weight budget of one call
    assert calls[1] == [1000, 1001]  # the small job next, alone, not after 19 more calls
    assert sum(len(c) for c in calls) < 100  # the cancelled job's remaining items never ran
