"""The due-queue's loop stops when its lease is lost, even when the cancel meets a wake-up: a
loop that swallowed that cancel kept its copy from claiming the queue again, and the queue's
emails or deliveries waited for ever (seen in the fault run)."""

import asyncio
from typing import Any, cast

from avis.notify.queue import DueQueue
from avis.notify.settings import Settings


class Idle(DueQueue[Any]):
    """A queue with nothing to do: each pass asks to sleep for a long while."""

    def __init__(self) -> None:
        super().__init__(
            name="email", store=cast(Any, None), channel=cast(Any, None), settings=Settings()
        )
        self.worked = asyncio.Event()

    async def work(self) -> float:
        self.worked.set()
        return 60.0


async def test_a_cancel_that_meets_a_wake_up_still_ends_the_loop() -> None:
    queue = Idle()
    running = asyncio.create_task(queue.run())
    await queue.worked.wait()
    await asyncio.sleep(0.01)  # asleep until the next due time
    queue.wake()
    running.cancel()  # in the same turn of the loop as the wake-up
    await asyncio.wait({running}, timeout=1.0)
    assert running.done(), "the loop swallowed its cancel"
    assert running.cancelled()
