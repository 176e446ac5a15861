"""What one sweep of the retention calendar costs the store: the requests it sends, counted by
a command listener on its own client, over a store holding many documents kept for a year and
a few past their time. `tests/integration/shared/test_retention.py` checks it at 1,000 kept
documents; `bench/bench_store.py --sweep` prints it at 1,000 and 50,000."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient, monitoring

from avis.shared.retention import Calendar, day_of, entry
from tests.support.basics import unique

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DUE = 25  # documents past their time, over three days
DAYS_OVER = 3


class Requests(monitoring.CommandListener):
    """The store requests a client sends, by command name."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Counted when sent."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Counted when sent."""


@dataclass(frozen=True)
class SweepCost:
    """One sweep over `kept` documents kept besides DUE ones past their time."""

    kept: int
    removed: int
    requests: list[str]  # command names, in the order sent
    left: int  # documents remaining after the sweep
    seconds: float  # the sweep's own time (printed by the bench, never checked)

    @property
    def beyond_removed(self) -> int:
        """The requests that are not one delete per document removed: the constant."""
        return len(self.requests) - self.requests.count("delete")


async def sweep_cost(mongo_url: str, kept: int) -> SweepCost:
    """A store holding `kept` documents kept for a year (on one day of the calendar, written
    in bulk as keep_until writes them one by one) and DUE ones past their time: one sweep."""
    requests = Requests()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, event_listeners=[requests]
    )
    db = client[unique("retention").replace("-", "_")]
    try:
        things = db["things"]
        calendar = Calendar(db)
        later = NOW + timedelta(days=365)
        for start in range(0, kept, 1000):
            ids = [f"kept-{n}" for n in range(start, min(start + 1000, kept))]
            await things.insert_many([{"_id": i} for i in ids])
            await db[day_of(later)].insert_many([entry("things", i) for i in ids])
        for n in range(DUE):
            await things.insert_one({"_id": f"due-{n}"})
            past = NOW - timedelta(days=1 + n % DAYS_OVER)
            await calendar.keep_until("things", f"due-{n}", past)
        requests.names.clear()
        started = time.perf_counter()
        removed = await calendar.sweep(NOW)
        seconds = time.perf_counter() - started
        sent = list(requests.names)
        left = await things.count_documents({})
        return SweepCost(kept, removed, sent, left, seconds)
    finally:
        await client.drop_database(db.name)
        await client.close()
