"""`avis.shared.tasks.stopped`: a background loop whose cancel was swallowed still ends."""

import asyncio
import sys

import pytest

from avis.shared.tasks import stopped


class Loop:
    """A background loop awaiting one network call after another through `asyncio.wait_for`,
    as PyMongo's and aiokafka's calls do; `answer` ends the call in progress."""

    def __init__(self) -> None:
        self.calls: list[asyncio.Future[None]] = []

    async def run(self) -> None:
        while True:
            call = asyncio.get_running_loop().create_future()
            self.calls.append(call)
            await asyncio.wait_for(call, timeout=60)

    async def started(self) -> asyncio.Task[None]:
        task = asyncio.create_task(self.run())
        await asyncio.sleep(0)  # it runs up to its first call
        assert self.calls
        return task

    def answer_and_cancel(self, task: asyncio.Task[None]) -> None:
        """The call's answer and the cancel in the same turn of the event loop."""
        self.calls[-1].set_result(None)
        task.cancel()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps the cancel from 3.12 on")
async def test_one_cancel_can_be_swallowed_by_wait_for() -> None:
    """The hazard itself: after one cancel the loop goes on with its next call."""
    loop = Loop()
    task = await loop.started()
    loop.answer_and_cancel(task)
    await asyncio.sleep(0.05)
    assert not task.done()
    assert len(loop.calls) == 2, "the loop went on to its next call"
    await stopped(task)


async def test_stopped_ends_a_loop_that_swallowed_a_cancel() -> None:
    loop = Loop()
    task = await loop.started()
    loop.answer_and_cancel(task)
    async with asyncio.timeout(5):
        await stopped(task, every=0.05)
    assert task.cancelled()


async def test_stopped_drops_an_error_and_accepts_nothing() -> None:
    async def fails() -> None:
        raise RuntimeError("gone")

    task = asyncio.create_task(fails())
    await asyncio.wait({task})
    await stopped(task)  # neither raised nor left unretrieved
    await stopped(None)
