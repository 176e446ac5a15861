"""Store contract: optimistic concurrency and writers racing.

FerretDB 1.x applies an update as read, modify, write back, so two writers updating one
document at the same time may lose an update. The services therefore keep one writer per
aggregate (an asyncio.Lock per aggregate in the process, the Kafka partition across
processes) and claim uniqueness only by inserting. These tests show both sides: what the
store does under contention, and that the pattern we rely on is exact on either store.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

pytestmark = pytest.mark.infra

Document = dict[str, Any]
ClientFactory = Callable[[], Awaitable[AsyncMongoClient[Document]]]
Observe = Callable[[str], None]

WRITERS = 2
TASKS_PER_WRITER = 50
TOTAL = WRITERS * TASKS_PER_WRITER


async def _writer_collections(
    client_factory: ClientFactory, db_name: str, name: str
) -> list[AsyncCollection[Document]]:
    """One collection handle per writer, each through its own client and connection pool."""
    return [(await client_factory())[db_name][name] for _ in range(WRITERS)]


# --- optimistic concurrency ------------------------------------------------------------------


async def test_version_guarded_update(db: AsyncDatabase[Document]) -> None:
    cases = db["cases"]
    await cases.insert_one({"_id": "c", "status": "submitted", "version": 1})

    stale = await cases.update_one(
        {"_id": "c", "version": 0}, {"$set": {"status": "assigned"}, "$inc": {"version": 1}}
    )
    assert (stale.matched_count, stale.modified_count) == (0, 0)

    fresh = await cases.update_one(
        {"_id": "c", "version": 1}, {"$set": {"status": "assigned"}, "$inc": {"version": 1}}
    )
    assert (fresh.matched_count, fresh.modified_count) == (1, 1)

    replay = await cases.update_one(
        {"_id": "c", "version": 1}, {"$set": {"status": "in_review"}, "$inc": {"version": 1}}
    )
    assert replay.matched_count == 0
    assert await cases.find_one({"_id": "c"}) == {"_id": "c", "status": "assigned", "version": 2}

    # the same guard through findAndModify: None means "someone else moved it"
    assert (
        await cases.find_one_and_update(
            {"_id": "c", "version": 1},
            {"$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
        )
        is None
    )
    after = await cases.find_one_and_update(
        {"_id": "c", "version": 2},
        {"$set": {"status": "in_review"}, "$inc": {"version": 1}},
        return_document=ReturnDocument.AFTER,
    )
    assert after == {"_id": "c", "status": "in_review", "version": 3}


# --- racing inserts --------------------------------------------------------------------------


async def test_racing_inserts_of_one_natural_id(
    client_factory: ClientFactory, db_name: str, db: AsyncDatabase[Document]
) -> None:
    """20 concurrent claims of one natural id: exactly one wins, the rest see a duplicate."""
    natural_id = "case-1:" + "ab" * 32
    handles = await _writer_collections(client_factory, db_name, "documents")
    start = asyncio.Event()

    async def claim(i: int) -> str:
        await start.wait()
        try:
            await handles[i % WRITERS].insert_one({"_id": natural_id, "writer": i})
        except DuplicateKeyError:
            return "duplicate"
        return "won"

    tasks = [asyncio.create_task(claim(i)) for i in range(20)]
    await asyncio.sleep(0)
    start.set()
    outcomes = await asyncio.gather(*tasks)

    assert outcomes.count("won") == 1
    assert outcomes.count("duplicate") == 19
    docs = await db["documents"].find().to_list()
    assert len(docs) == 1
    assert docs[0]["writer"] == outcomes.index("won")


async def test_racing_inserts_under_unique_compound_index(
    client_factory: ClientFactory, db_name: str, db: AsyncDatabase[Document]
) -> None:
    await db["assignments"].create_index([("case_id", 1), ("round", 1)], unique=True)
    handles = await _writer_collections(client_factory, db_name, "assignments")
    start = asyncio.Event()

    async def claim(i: int) -> bool:
        await start.wait()
        try:
            await handles[i % WRITERS].insert_one({"case_id": "c-1", "round": 1, "writer": i})
        except DuplicateKeyError:
            return False
        return True

    tasks = [asyncio.create_task(claim(i)) for i in range(20)]
    await asyncio.sleep(0)
    start.set()
    assert sum(await asyncio.gather(*tasks)) == 1
    assert await db["assignments"].count_documents({}) == 1


# --- racing updates of one document ----------------------------------------------------------


@pytest.mark.ferretdb_differs(
    reason="updates are read-modify-write: concurrent $inc on one document can lose "
    "increments (the design does not rely on the store to serialise writers)",
    strict=False,
)
async def test_concurrent_inc_from_two_clients(
    client_factory: ClientFactory,
    db_name: str,
    db: AsyncDatabase[Document],
    observe: Observe,
) -> None:
    """2 clients x 50 concurrent $inc on one document: MongoDB applies every one."""
    await db["counters"].insert_one({"_id": "c", "n": 0})
    handles = await _writer_collections(client_factory, db_name, "counters")
    start = asyncio.Event()

    async def bump(i: int) -> int:
        await start.wait()
        result = await handles[i % WRITERS].update_one({"_id": "c"}, {"$inc": {"n": 1}})
        return result.modified_count

    tasks = [asyncio.create_task(bump(i)) for i in range(TOTAL)]
    await asyncio.sleep(0)
    start.set()
    acknowledged = sum(await asyncio.gather(*tasks))

    doc = await db["counters"].find_one({"_id": "c"})
    assert doc is not None
    observe(
        f"{TOTAL} concurrent $inc ({WRITERS} clients x {TASKS_PER_WRITER}), "
        f"{acknowledged} acknowledged as modified, final count {doc['n']}"
    )
    assert doc["n"] == TOTAL, f"{TOTAL - doc['n']} of {TOTAL} increments lost"


@pytest.mark.ferretdb_differs(
    reason="a version-guarded update is not atomic under contention: several writers are "
    "told they matched the same version (matched_count 1) while only one write survives",
    strict=False,
)
async def test_racing_version_guarded_updates(
    client_factory: ClientFactory,
    db_name: str,
    db: AsyncDatabase[Document],
    observe: Observe,
) -> None:
    """20 writers guard on version 0 at once: on MongoDB exactly one matches."""
    await db["cases"].insert_one({"_id": "c", "version": 0, "winners": []})
    handles = await _writer_collections(client_factory, db_name, "cases")
    start = asyncio.Event()

    async def attempt(i: int) -> int:
        await start.wait()
        result = await handles[i % WRITERS].update_one(
            {"_id": "c", "version": 0}, {"$inc": {"version": 1}, "$push": {"winners": i}}
        )
        return result.matched_count

    tasks = [asyncio.create_task(attempt(i)) for i in range(20)]
    await asyncio.sleep(0)
    start.set()
    matched = sum(await asyncio.gather(*tasks))

    doc = await db["cases"].find_one({"_id": "c"})
    assert doc is not None
    observe(
        f"20 racing updates guarded by version 0: {matched} matched, "
        f"final version {doc['version']}, winners stored {doc['winners']}"
    )
    assert matched == 1
    assert doc["version"] == 1
    assert len(doc["winners"]) == 1


@pytest.mark.ferretdb_differs(
    reason="concurrent upserts of one _id can surface DuplicateKeyError to some callers "
    "and lose the $inc of others",
    strict=False,
)
async def test_racing_upserts_of_one_id(
    client_factory: ClientFactory,
    db_name: str,
    db: AsyncDatabase[Document],
    observe: Observe,
) -> None:
    """20 concurrent upserts by _id: MongoDB retries the loser's insert as an update."""
    handles = await _writer_collections(client_factory, db_name, "effects")
    start = asyncio.Event()

    async def upsert(i: int) -> str:
        await start.wait()
        try:
            result = await handles[i % WRITERS].update_one(
                {"_id": "evt-1"}, {"$setOnInsert": {"first": i}, "$inc": {"seen": 1}}, upsert=True
            )
        except DuplicateKeyError:
            return "duplicate"
        return "inserted" if result.upserted_id is not None else "matched"

    tasks = [asyncio.create_task(upsert(i)) for i in range(20)]
    await asyncio.sleep(0)
    start.set()
    outcomes = await asyncio.gather(*tasks)
    doc = await db["effects"].find_one({"_id": "evt-1"})
    assert doc is not None
    observe(
        f"20 racing upserts of one _id: "
        f"{ {k: outcomes.count(k) for k in ('inserted', 'matched', 'duplicate')} }, "
        f"seen={doc['seen']}"
    )
    assert outcomes.count("inserted") == 1
    assert outcomes.count("duplicate") == 0
    assert doc["seen"] == 20


# --- the pattern the services rely on --------------------------------------------------------


class AggregateLocks:
    """One asyncio.Lock per aggregate id, as each service keeps in-process."""

    def __init__(self) -> None:
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def __call__(self, aggregate_id: str) -> asyncio.Lock:
        return self._locks[aggregate_id]


async def test_serialised_inc_is_exact(
    client_factory: ClientFactory, db_name: str, db: AsyncDatabase[Document]
) -> None:
    """The same 2 x 50 $inc, serialised per aggregate: exact on both stores."""
    await db["counters"].insert_many([{"_id": "a", "n": 0}, {"_id": "b", "n": 0}])
    handles = await _writer_collections(client_factory, db_name, "counters")
    locks = AggregateLocks()
    start = asyncio.Event()

    async def bump(i: int, aggregate_id: str) -> None:
        await start.wait()
        async with locks(aggregate_id):
            await handles[i % WRITERS].update_one({"_id": aggregate_id}, {"$inc": {"n": 1}})

    # two aggregates, so serialising one does not serialise the other
    tasks = [asyncio.create_task(bump(i, agg)) for i in range(TOTAL) for agg in ("a", "b")]
    await asyncio.sleep(0)
    start.set()
    await asyncio.gather(*tasks)

    counts = {d["_id"]: d["n"] async for d in db["counters"].find()}
    assert counts == {"a": TOTAL, "b": TOTAL}


async def test_serialised_read_modify_write_is_exact(
    client_factory: ClientFactory, db_name: str, db: AsyncDatabase[Document]
) -> None:
    """The services' aggregate write: read, decide, write guarded by version, under the lock."""
    await db["cases"].insert_one({"_id": "c", "version": 0, "n": 0, "timeline": []})
    handles = await _writer_collections(client_factory, db_name, "cases")
    locks = AggregateLocks()
    conflicts = 0
    start = asyncio.Event()

    async def step(i: int) -> None:
        nonlocal conflicts
        coll = handles[i % WRITERS]
        await start.wait()
        async with locks("c"):
            current = await coll.find_one({"_id": "c"})
            assert current is not None
            result = await coll.update_one(
                {"_id": "c", "version": current["version"]},
                {
                    "$set": {"n": current["n"] + 1},
                    "$inc": {"version": 1},
                    "$push": {"timeline": {"step": i}},
                },
            )
            conflicts += result.matched_count == 0

    tasks = [asyncio.create_task(step(i)) for i in range(TOTAL)]
    await asyncio.sleep(0)
    start.set()
    await asyncio.gather(*tasks)

    doc = await db["cases"].find_one({"_id": "c"})
    assert doc is not None
    assert conflicts == 0
    assert (doc["n"], doc["version"], len(doc["timeline"])) == (TOTAL, TOTAL, TOTAL)
    assert sorted(e["step"] for e in doc["timeline"]) == list(range(TOTAL))
