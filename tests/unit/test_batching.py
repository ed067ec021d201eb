"""Natural batching: what arrives together is one batch; nothing waits for a batch to fill."""

from __future__ import annotations

import asyncio

import pytest

from serving.batching import NaturalBatcher


class Work:
    """Doubles each job; fails a batch holding a negative one."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, jobs: list[int]) -> list[int]:
        self.batches.append(jobs)
        if any(j < 0 for j in jobs):
            raise ValueError("negative job")
        return [2 * j for j in jobs]


def test_a_lone_request_is_a_batch_of_one():
    work = Work()
    batcher = NaturalBatcher(work)

    async def main() -> list[int]:
        return [await batcher.submit(1), await batcher.submit(2)]

    assert asyncio.run(main()) == [2, 4]
    assert work.batches == [[1], [2]]


def test_requests_that_arrive_together_are_scored_together_in_order():
    work = Work()
    batcher = NaturalBatcher(work)

    async def main() -> list[int]:
        return await asyncio.gather(*(batcher.submit(j) for j in (1, 2, 3, 4)))

    assert asyncio.run(main()) == [2, 4, 6, 8]
    assert work.batches == [[1, 2, 3, 4]]


def test_at_most_max_jobs_per_batch():
    work = Work()
    batcher = NaturalBatcher(work, max_jobs=3)

    async def main() -> list[int]:
        return await asyncio.gather(*(batcher.submit(j) for j in range(7)))

    assert asyncio.run(main()) == [2 * j for j in range(7)]
    assert work.batches == [[0, 1, 2], [3, 4, 5], [6]]


def test_a_failing_batch_fails_its_requests_only():
    work = Work()
    batcher = NaturalBatcher(work)

    async def main() -> tuple[list, int]:
        outcomes = await asyncio.gather(
            batcher.submit(-1), batcher.submit(5), return_exceptions=True
        )
        return outcomes, await batcher.submit(7)

    outcomes, later = asyncio.run(main())
    assert all(isinstance(o, ValueError) for o in outcomes)
    assert later == 14


def test_a_request_whose_client_left_before_its_batch_is_not_worked_on():
    work = Work()
    batcher = NaturalBatcher(work)

    async def main() -> None:
        gone = asyncio.ensure_future(batcher.submit(2))
        kept = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0)  # both queued; the batch has not started
        gone.cancel()
        assert await kept == 6
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(main())
    assert work.batches == [[3]]
