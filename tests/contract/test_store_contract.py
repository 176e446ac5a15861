"""Store contract: basic documents, queries, pagination, types and an unreachable store.

The update operators, indexes, large documents and concurrency live in the sibling
`test_store_*.py` modules. Every test gets its own database (see conftest.py).
"""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ServerSelectionTimeoutError

from avis.shared.audit import KEEP_AT_ONCE

pytestmark = pytest.mark.infra

Document = dict[str, Any]

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


async def _seed_cases(coll: AsyncCollection[Document]) -> None:
    statuses = ["draft", "submitted", "assigned", "in_review", "report_ready"]
    await coll.insert_many(
        [
            {
                "_id": f"case-{i:03d}",
                "status": statuses[i % 5],
                "urgency": i % 3,
                "partner_id": "p-1" if i % 2 == 0 else "p-2",
                "created_at": T0 + timedelta(hours=i),
            }
            for i in range(30)
        ]
    )


# --- single documents ------------------------------------------------------------------------


async def test_insert_find_replace_delete_by_id(db: AsyncDatabase[Document]) -> None:
    cases = db["cases"]
    result = await cases.insert_one({"_id": "case-1", "status": "draft", "version": 1})
    assert result.inserted_id == "case-1"
    assert result.acknowledged

    assert await cases.find_one({"_id": "case-1"}) == {
        "_id": "case-1",
        "status": "draft",
        "version": 1,
    }
    assert await cases.find_one({"_id": "missing"}) is None

    replaced = await cases.replace_one(
        {"_id": "case-1"}, {"status": "submitted", "version": 2, "timeline": []}
    )
    assert (replaced.matched_count, replaced.modified_count) == (1, 1)
    # replace keeps _id and drops every field not in the replacement
    assert await cases.find_one({"_id": "case-1"}) == {
        "_id": "case-1",
        "status": "submitted",
        "version": 2,
        "timeline": [],
    }

    missing = await cases.replace_one({"_id": "nope"}, {"status": "x"})
    assert (missing.matched_count, missing.modified_count, missing.upserted_id) == (0, 0, None)

    deleted = await cases.delete_one({"_id": "case-1"})
    assert deleted.deleted_count == 1
    assert await cases.find_one({"_id": "case-1"}) is None
    assert (await cases.delete_one({"_id": "case-1"})).deleted_count == 0


async def test_insert_one_generates_object_id(db: AsyncDatabase[Document]) -> None:
    doc: Document = {"kind": "note"}
    result = await db["notes"].insert_one(doc)
    assert isinstance(result.inserted_id, ObjectId)
    assert doc["_id"] == result.inserted_id
    assert await db["notes"].find_one({"_id": result.inserted_id}) == doc


async def test_replace_one_with_version_filter(db: AsyncDatabase[Document]) -> None:
    """A whole-document rewrite guarded by the version it was read at."""
    cases = db["cases"]
    await cases.insert_one({"_id": "c", "status": "draft", "version": 3})
    stale = await cases.replace_one({"_id": "c", "version": 2}, {"status": "x", "version": 3})
    assert stale.matched_count == 0
    fresh = await cases.replace_one(
        {"_id": "c", "version": 3}, {"status": "submitted", "version": 4}
    )
    assert fresh.matched_count == 1
    assert await cases.find_one({"_id": "c"}) == {"_id": "c", "status": "submitted", "version": 4}


# --- queries ---------------------------------------------------------------------------------


async def test_find_equality_and_range_filters(db: AsyncDatabase[Document]) -> None:
    cases = db["cases"]
    await _seed_cases(cases)

    submitted = [d["_id"] async for d in cases.find({"status": "submitted"}).sort("_id")]
    assert submitted == [f"case-{i:03d}" for i in range(30) if i % 5 == 1]

    both = [
        d["_id"] async for d in cases.find({"status": "draft", "partner_id": "p-1"}).sort("_id")
    ]
    assert both == ["case-000", "case-010", "case-020"]

    urgent = await cases.count_documents({"urgency": {"$gte": 2}})
    assert urgent == 10
    assert await cases.count_documents({"urgency": {"$gt": 0, "$lt": 2}}) == 10
    assert await cases.count_documents({"urgency": {"$ne": 0}}) == 20
    assert await cases.count_documents({"status": {"$in": ["draft", "assigned"]}}) == 12

    window = [
        d["_id"]
        async for d in cases.find(
            {"created_at": {"$gte": T0 + timedelta(hours=5), "$lt": T0 + timedelta(hours=8)}}
        ).sort("created_at")
    ]
    assert window == ["case-005", "case-006", "case-007"]

    by_string = [d["_id"] async for d in cases.find({"_id": {"$lte": "case-002"}}).sort("_id")]
    assert by_string == ["case-000", "case-001", "case-002"]


async def test_find_projection(db: AsyncDatabase[Document]) -> None:
    await _seed_cases(db["cases"])
    doc = await db["cases"].find_one({"_id": "case-004"}, {"status": 1, "_id": 0})
    assert doc == {"status": "report_ready"}
    doc = await db["cases"].find_one({"_id": "case-004"}, {"created_at": 0, "partner_id": 0})
    assert doc == {"_id": "case-004", "status": "report_ready", "urgency": 1}


async def test_find_equality_on_nested_field_and_array_element(
    db: AsyncDatabase[Document],
) -> None:
    coll = db["docs"]
    await coll.insert_many(
        [
            {"_id": 1, "patient": {"lang": "fr"}, "tags": ["mri", "lab"]},
            {"_id": 2, "patient": {"lang": "en"}, "tags": ["lab"]},
            {"_id": 3, "patient": {"lang": "fr"}, "tags": []},
        ]
    )
    assert [d["_id"] async for d in coll.find({"patient.lang": "fr"}).sort("_id")] == [1, 3]
    # equality against an array field matches any element
    assert [d["_id"] async for d in coll.find({"tags": "lab"}).sort("_id")] == [1, 2]


async def test_find_documents_with_pending_array_elements(db: AsyncDatabase[Document]) -> None:
    """How a relay finds aggregates that still hold unpublished outbox entries."""
    coll = db["cases"]
    await coll.insert_many(
        [
            {"_id": "a", "outbox": [{"id": "e1", "topic": "case-submitted"}]},
            {"_id": "b", "outbox": []},
            {"_id": "c"},
            {"_id": "d", "outbox": [{"id": "e2", "topic": "report-ready"}, {"id": "e3"}]},
        ]
    )
    pending = {"outbox.0": {"$exists": True}}
    assert [d["_id"] async for d in coll.find(pending).sort("_id")] == ["a", "d"]
    assert [d["_id"] async for d in coll.find({"outbox": {"$ne": []}}).sort("_id")] == [
        "a",
        "c",
        "d",
    ]
    assert [d["_id"] async for d in coll.find({"outbox": {"$exists": False}})] == ["c"]
    # a dotted path through an array of documents matches any element
    assert [d["_id"] async for d in coll.find({"outbox.id": "e3"})] == ["d"]
    assert [d["_id"] async for d in coll.find({"outbox.topic": "case-submitted"})] == ["a"]


async def test_sort_single_key_with_limit(db: AsyncDatabase[Document]) -> None:
    cases = db["cases"]
    await _seed_cases(cases)
    newest = [d["_id"] async for d in cases.find().sort("created_at", DESCENDING).limit(3)]
    assert newest == ["case-029", "case-028", "case-027"]
    oldest = [
        d["_id"]
        async for d in cases.find({"partner_id": "p-2"}).sort("created_at", ASCENDING).limit(2)
    ]
    assert oldest == ["case-001", "case-003"]
    docs = await cases.find().sort("_id", DESCENDING).limit(4).to_list()
    assert [d["_id"] for d in docs] == ["case-029", "case-028", "case-027", "case-026"]


async def test_sort_compound_with_limit(db: AsyncDatabase[Document]) -> None:
    cases = db["cases"]
    await _seed_cases(cases)
    # most urgent first, then oldest first within an urgency
    got = [
        (d["urgency"], d["_id"])
        async for d in cases.find()
        .sort([("urgency", DESCENDING), ("created_at", ASCENDING)])
        .limit(4)
    ]
    assert got == [(2, "case-002"), (2, "case-005"), (2, "case-008"), (2, "case-011")]

    expected = sorted(
        ((i % 3, f"case-{i:03d}") for i in range(30)), key=lambda p: (p[0], -int(p[1][5:]))
    )
    got_all = [
        (d["urgency"], d["_id"])
        async for d in cases.find().sort([("urgency", ASCENDING), ("_id", DESCENDING)])
    ]
    assert got_all == expected


async def test_sort_puts_missing_and_null_first_ascending(db: AsyncDatabase[Document]) -> None:
    coll = db["docs"]
    await coll.insert_many(
        [
            {"_id": 1, "due": T0},
            {"_id": 2},
            {"_id": 3, "due": None},
            {"_id": 4, "due": T0 - timedelta(1)},
        ]
    )
    got = [d["_id"] async for d in coll.find().sort([("due", ASCENDING), ("_id", ASCENDING)])]
    assert got == [2, 3, 4, 1]


async def test_cursor_pagination_by_id(db: AsyncDatabase[Document]) -> None:
    """Keyset pagination: `_id > last` with sort on `_id` and a limit, for string ids."""
    cases = db["cases"]
    await _seed_cases(cases)
    await cases.insert_one({"_id": "case-999", "status": "draft"})  # not in the filter below

    pages: list[list[str]] = []
    cursor: str | None = None
    query: dict[str, Any] = {"partner_id": "p-1"}
    while True:
        page_filter = dict(query)
        if cursor is not None:
            page_filter["_id"] = {"$gt": cursor}
        page = [d["_id"] async for d in cases.find(page_filter).sort("_id", ASCENDING).limit(4)]
        if not page:
            break
        pages.append(page)
        cursor = page[-1]

    assert [len(p) for p in pages] == [4, 4, 4, 3]
    flat = [i for p in pages for i in p]
    assert flat == [f"case-{i:03d}" for i in range(0, 30, 2)]


async def test_cursor_pagination_by_object_id(db: AsyncDatabase[Document]) -> None:
    """Same pattern with generated ObjectIds."""
    coll = db["notifications"]
    ids = [(await coll.insert_one({"n": n})).inserted_id for n in range(11)]
    expected = [n for _, n in sorted(zip(ids, range(11), strict=True))]

    seen: list[int] = []
    last: ObjectId | None = None
    while True:
        flt = {} if last is None else {"_id": {"$gt": last}}
        page = await coll.find(flt).sort("_id", ASCENDING).limit(5).to_list()
        if not page:
            break
        seen.extend(d["n"] for d in page)
        last = page[-1]["_id"]
    assert seen == expected


async def test_delete_many_by_filter(db: AsyncDatabase[Document]) -> None:
    await _seed_cases(db["cases"])
    result = await db["cases"].delete_many({"status": "draft"})
    assert result.deleted_count == 6
    assert await db["cases"].count_documents({}) == 24


async def test_delete_many_of_id_and_token_pairs_deletes_only_exact_pairs(
    db: AsyncDatabase[Document],
) -> None:
    # What the outbox relay and the sections do with the entries they are done with: one
    # delete naming each entry and the token it was written with; an entry written again
    # since (another token) stays, and so does one not named.
    entries = db["entries"]
    await entries.insert_many([{"_id": f"e{i}", "token": f"t{i}"} for i in range(4)])
    await entries.update_one({"_id": "e1"}, {"$set": {"token": "t1-again"}})
    pairs = [{"_id": "e0", "token": "t0"}, {"_id": "e1", "token": "t1"}]
    pairs.append({"_id": "e2", "token": "t2"})
    result = await entries.delete_many({"$or": pairs})
    assert result.deleted_count == 2
    left = {d["_id"]: d["token"] async for d in entries.find({})}
    assert left == {"e1": "t1-again", "e3": "t3"}


# --- types -----------------------------------------------------------------------------------


async def test_datetimes_round_trip_as_aware_utc(db: AsyncDatabase[Document]) -> None:
    paris = timezone(timedelta(hours=1), "CET")
    local = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=paris)
    await db["t"].insert_one({"_id": 1, "utc": T0, "local": local, "list": [T0, local]})

    doc = await db["t"].find_one({"_id": 1})
    assert doc is not None
    for value in (doc["utc"], doc["local"], *doc["list"]):
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)
    assert doc["utc"] == T0
    # BSON dates carry milliseconds: microseconds are truncated, the instant is converted to UTC
    assert doc["local"] == datetime(2026, 3, 1, 8, 30, 15, 123000, tzinfo=UTC)
    assert doc["list"] == [T0, doc["local"]]


async def test_datetimes_are_naive_without_tz_aware(
    store_url: str, db_name: str, db: AsyncDatabase[Document]
) -> None:
    """Why the services set tz_aware=True: otherwise pymongo hands back naive datetimes."""
    await db["t"].insert_one({"_id": 1, "at": T0})
    naive_client: AsyncMongoClient[Document] = AsyncMongoClient(store_url)
    try:
        doc = await naive_client[db_name]["t"].find_one({"_id": 1})
    finally:
        await naive_client.close()
    assert doc is not None
    assert doc["at"].tzinfo is None
    assert doc["at"] == T0.replace(tzinfo=None)


async def test_nested_documents_and_arrays_round_trip(db: AsyncDatabase[Document]) -> None:
    original: Document = {
        "_id": "case-1",
        "patient": {"contact": {"sealed": {"kid": "k1", "ct": b"\x00\x01\xff"}}, "lang": "fr"},
        "timeline": [
            {"status": "draft", "at": T0, "meta": {"by": "u-1"}},
            {"status": "submitted", "at": T0 + timedelta(minutes=5), "meta": {}},
        ],
        "empty_doc": {},
        "empty_list": [],
        "none": None,
        "numbers": {"i": 7, "big": 2**40, "f": 0.25, "neg": -3},
        "unicode": "Évaluation bénéfice/risque — 第二意见",
    }
    await db["cases"].insert_one(original)
    doc = await db["cases"].find_one({"_id": "case-1"})
    assert doc == original
    assert isinstance(doc["numbers"]["big"], int)
    # field order is part of a document (replace and $pull compare whole documents)
    assert list(doc) == list(original)
    assert list(doc["timeline"][0]) == ["status", "at", "meta"]


@pytest.mark.ferretdb_differs(
    reason="rejects arrays nested directly in arrays: WriteError code 2 "
    "'nested arrays are not supported'"
)
async def test_arrays_of_arrays_round_trip(db: AsyncDatabase[Document]) -> None:
    """Not relied on: keep arrays of documents, never arrays directly inside arrays."""
    original: Document = {"_id": 1, "matrix": [[1, 2], [3, [4, {"deep": True}]]]}
    await db["t"].insert_one(original)
    assert await db["t"].find_one({"_id": 1}) == original


# --- an unreachable store --------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_store_raises_server_selection_timeout() -> None:
    """The error the services map to "not ready"."""
    port = _closed_port()
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=500, connectTimeoutMS=500
    )
    started = time.monotonic()
    try:
        with pytest.raises(ServerSelectionTimeoutError):
            await client.admin.command("ping")
        with pytest.raises(ServerSelectionTimeoutError):
            await client["avis"]["cases"].find_one({"_id": "x"})
    finally:
        await client.close()
    assert time.monotonic() - started < 5


async def test_find_by_id_in_list_with_sort(db: AsyncDatabase[Document]) -> None:
    # The outbox relay reads a batch of aggregates this way, under their locks.
    cases = db["cases"]
    await _seed_cases(cases)
    wanted = ["case-007", "case-002", "case-999", "case-004"]
    found = [
        d["_id"] async for d in cases.find({"_id": {"$in": wanted}}, {"_id": 1}).sort("_id", 1)
    ]
    assert found == ["case-002", "case-004", "case-007"]


async def test_a_bulk_write_of_fifty_updates_of_documents_that_exist_completes(
    db: AsyncDatabase[Document],
) -> None:
    """The local store stalls on a bulk write of many updates of documents that exist (100
    did not finish within 30 s, 64 took some 40 ms): the services send at most 50 a request
    (`avis.shared.audit.KEEP_AT_ONCE`, the largest such bulk write)."""
    coll = db["bulk_updates"]
    await coll.insert_many([{"_id": f"h{i}", "seq": 0} for i in range(KEEP_AT_ONCE)])
    writes = [ReplaceOne({"_id": f"h{i}"}, {"seq": 1}, upsert=True) for i in range(KEEP_AT_ONCE)]
    async with asyncio.timeout(10):
        result = await coll.bulk_write(writes)
    assert result.modified_count == KEEP_AT_ONCE
    assert await coll.count_documents({"seq": 1}) == KEEP_AT_ONCE
