"""One backoff policy for every retry loop: exponential from 0.1 s, doubled per attempt, capped,
with +/-20 % jitter so instances that failed together do not retry together.

    retry = Backoff(settings.retry_backoff_max_seconds)
    while True:
        try:
            ...; retry.reset(); break
        except SomeTransientError:
            await retry.wait()
"""

import asyncio
import random


def backoff(attempt: int, cap: float) -> float:
    """The delay before retry number `attempt` (1, 2, ...): exponential with jitter, capped."""
    return float(min(cap, 0.1 * 2 ** min(max(attempt, 1), 16)) * random.uniform(0.8, 1.2))  # noqa: S311


class Backoff:
    """Counts the failures of one loop and sleeps the policy's delay after each."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        """Count one more failure; the delay to wait before the next attempt."""
        self.attempt += 1
        return backoff(self.attempt, self.cap)

    async def wait(self) -> float:
        """Count one more failure and sleep before the next attempt; returns the delay slept."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay

    def reset(self) -> None:
        """The loop succeeded: the next failure starts from the shortest delay again."""
        self.attempt = 0
