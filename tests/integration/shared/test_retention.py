"""The retention calendar on the real store: a sweep removes what is past its time and nothing
else, and its store requests are the number it removes plus a constant, with 1,000 documents
kept besides (`make bench-store` prints the same at 50,000: tests/support/retention.py)."""

from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from avis.shared.retention import Calendar
from tests.support.basics import MONGO_URL, unique
from tests.support.retention import DAYS_OVER, DUE, NOW, sweep_cost

pytestmark = pytest.mark.infra


async def test_a_sweep_costs_what_it_removes_plus_a_constant() -> None:
    cost = await sweep_cost(MONGO_URL, 1_000)
    assert cost.removed == DUE
    assert cost.requests.count("delete") == DUE, "one delete by _id per document removed"
    # A listing, then per day over: a read, a next (the local store's batch) and a drop.
    assert cost.beyond_removed <= 1 + 3 * DAYS_OVER, cost.requests
    assert cost.left == 1_000, "nothing kept was removed"


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
