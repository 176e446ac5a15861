"""Where a hung test waits: shortly before pytest-timeout fails a test, the stack of every asyncio
task on the suite's event loop is printed to the test's captured stderr.

pytest-timeout's own dump shows the threads, and the main thread of a hung asyncio test only
ever shows the event loop waiting; the tasks say what it waits for (a stop that never ends, a
consumer that never joins). Registered by tests/conftest.py.
"""

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

EARLY = 10.0  # seconds before the test's timeout


class Hangs:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def dump(self) -> None:
        """On the loop's own thread: every task and where it waits."""
        print(f"[hang] the event loop's tasks, {EARLY:.0f} s before the timeout:", file=sys.stderr)
        for task in asyncio.all_tasks():
            print(f"[hang] {task!r}", file=sys.stderr)
            task.print_stack(limit=12, file=sys.stderr)

    def watching(self, timeout: float) -> threading.Timer | None:
        loop = self.loop
        if loop is None or timeout <= EARLY:
            return None
        timer = threading.Timer(timeout - EARLY, lambda: loop.call_soon_threadsafe(self.dump))
        timer.daemon = True
        timer.start()
        return timer


HANGS = Hangs()


@pytest_asyncio.fixture(scope="session", loop_scope="session", autouse=True)
async def suite_loop() -> AsyncIterator[None]:
    """Notes the suite's one event loop (the tests' and fixtures' loop scope is the session)."""
    HANGS.loop = asyncio.get_running_loop()
    yield
    HANGS.loop = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    marker = item.get_closest_marker("timeout")
    timeout = float(marker.args[0]) if marker and marker.args else item.config.getini("timeout")
    timer = HANGS.watching(float(timeout or 0))
    try:
        return (yield)
    finally:
        if timer is not None:
            timer.cancel()
