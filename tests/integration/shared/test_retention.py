"""The retention calendar on the real store: a sweep removes what is past its time and nothing
else, and its store requests are the number it removes plus a constant, whether 1,000 or 20,000
documents are kept besides."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from avis.shared.retention import Calendar, day_of, entry
from tests.support.basics import MONGO_URL, unique

pytestmark = pytest.mark.infra

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DUE = 25


class Requests(monitoring.CommandListener):
    """The store requests a client sends, by command name."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def sweep_requests(kept: int) -> tuple[int, list[str], int]:
    """A store holding `kept` documents kept for a year and DUE ones past their time: what one
    sweep removes, the requests it sends, and how many documents remain."""
    requests = Requests()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        MONGO_URL, event_listeners=[requests]
    )
    db = client[unique("retention").replace("-", "_")]
    try:
        things = db["things"]
        calendar = Calendar(db)
        later = NOW + timedelta(days=365)
        docs = [{"_id": f"kept-{n}"} for n in range(kept)]
        for start in range(0, kept, 1000):  # the calendar as keep_until writes it, in bulk
            await things.insert_many(docs[start : start + 1000])
            batch = [entry("things", d["_id"]) for d in docs[start : start + 1000]]
            await db[day_of(later)].insert_many(batch)
        for n in range(DUE):
            await things.insert_one({"_id": f"due-{n}"})
            past = NOW - timedelta(days=1 + n % 3)  # three days over
            await calendar.keep_until("things", f"due-{n}", past)
        requests.names.clear()
        removed = await calendar.sweep(NOW)
        sent = list(requests.names)
        left = await things.count_documents({})
        return removed, sent, left
    finally:
        await client.drop_database(db.name)
        await client.close()


async def test_a_sweep_costs_what_it_removes_plus_a_constant() -> None:
    small = await sweep_requests(1_000)
    large = await sweep_requests(20_000)
    for removed, sent, _left in (small, large):
        assert removed == DUE
        assert sent.count("delete") == DUE, "one delete by _id per document removed"
        assert len(sent) - DUE <= 1 + 3 * 3, sent  # a listing; a read, a next, a drop per day
    assert small[2] == 1_000 and large[2] == 20_000, "nothing kept was removed"
    assert sorted(small[1]) == sorted(large[1]), "the same requests, whatever is kept besides"


async def test_a_second_sweep_finds_nothing_and_putting_twice_is_once() -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
    db = client[unique("retention").replace("-", "_")]
    try:
        calendar = Calendar(db)
        await db["things"].insert_one({"_id": "a"})
        await calendar.keep_until("things", "a", NOW - timedelta(days=1))
        await calendar.keep_until("things", "a", NOW - timedelta(days=1))
        assert await calendar.sweep(NOW - timedelta(days=1)) == 0, "not past yet on its own day"
        assert await calendar.sweep(NOW) == 1
        assert await calendar.sweep(NOW) == 0
        assert await db["things"].find_one({"_id": "a"}) is None
    finally:
        await client.drop_database(db.name)
        await client.close()
