"""Ending a background task for good.

One cancel is not always enough on Python 3.11: `asyncio.wait_for`, which PyMongo's and
aiokafka's network calls use, swallows a cancel that arrives just as what it waits for ends, and
the task goes on. For a loop (a relay, a lease's renewal, a retry) that is forever, and an
`await task` after one `task.cancel()` never returns: a stop hangs. `stopped` cancels until the
task has ended.
"""

import asyncio
from typing import Any


async def stopped(task: asyncio.Task[Any] | None, every: float = 1.0) -> None:
    """Cancel `task` until it has ended (again every `every` seconds); its outcome, a result, a
    cancel or an error, is dropped: a stop has no use for it."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled():
        task.exception()  # retrieved: not reported as "never retrieved" when collected
