"""Store contract: update operators, upserts and findOneAndUpdate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

pytestmark = pytest.mark.infra

Document = dict[str, Any]
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


# --- operators -------------------------------------------------------------------------------


async def test_set_top_level_and_dotted_nested_paths(db: AsyncDatabase[Document]) -> None:
    cases = db["cases"]
    await cases.insert_one({"_id": "c", "status": "draft", "sla": {"due": None, "hours": 72}})

    result = await cases.update_one(
        {"_id": "c"},
        {
            "$set": {
                "status": "assigned",
                "sla.due": T0,  # existing sub-document, existing field
                "sla.policy.name": "standard",  # missing intermediate documents are created
                "assignment.reviewer_id": "r-1",  # missing top-level document is created
            }
        },
    )
    assert (result.matched_count, result.modified_count) == (1, 1)
    assert await cases.find_one({"_id": "c"}) == {
        "_id": "c",
        "status": "assigned",
        "sla": {"due": T0, "hours": 72, "policy": {"name": "standard"}},
        "assignment": {"reviewer_id": "r-1"},
    }

    # setting the same values again matches but modifies nothing
    again = await cases.update_one({"_id": "c"}, {"$set": {"status": "assigned"}})
    assert (again.matched_count, again.modified_count) == (1, 0)

    # a whole sub-document replaced with $set on its path
    await cases.update_one({"_id": "c"}, {"$set": {"sla": {"hours": 24}}})
    doc = await cases.find_one({"_id": "c"})
    assert doc is not None
    assert doc["sla"] == {"hours": 24}

    none = await cases.update_one({"_id": "missing"}, {"$set": {"status": "x"}})
    assert (none.matched_count, none.modified_count, none.upserted_id) == (0, 0, None)


async def test_set_dotted_path_into_array_element_by_index(db: AsyncDatabase[Document]) -> None:
    coll = db["cases"]
    await coll.insert_one({"_id": "c", "timeline": [{"s": "draft"}, {"s": "submitted"}]})
    await coll.update_one({"_id": "c"}, {"$set": {"timeline.1.at": T0}})
    doc = await coll.find_one({"_id": "c"})
    assert doc is not None
    assert doc["timeline"] == [{"s": "draft"}, {"s": "submitted", "at": T0}]


async def test_unset(db: AsyncDatabase[Document]) -> None:
    coll = db["cases"]
    await coll.insert_one(
        {"_id": "c", "lease": {"owner": "w-1", "until": T0}, "draft_note": "x", "keep": 1}
    )
    result = await coll.update_one(
        {"_id": "c"}, {"$unset": {"draft_note": "", "lease.until": "", "absent": ""}}
    )
    assert result.modified_count == 1
    assert await coll.find_one({"_id": "c"}) == {"_id": "c", "lease": {"owner": "w-1"}, "keep": 1}

    await coll.update_one({"_id": "c"}, {"$unset": {"lease": ""}})
    assert await coll.find_one({"_id": "c"}) == {"_id": "c", "keep": 1}

    # unsetting only absent fields matches but modifies nothing
    noop = await coll.update_one({"_id": "c"}, {"$unset": {"absent": ""}})
    assert (noop.matched_count, noop.modified_count) == (1, 0)


async def test_set_and_unset_in_one_update(db: AsyncDatabase[Document]) -> None:
    coll = db["outbox"]
    await coll.insert_one({"_id": "e", "state": "pending", "attempt_error": "timeout"})
    await coll.update_one(
        {"_id": "e", "state": "pending"},
        {"$set": {"state": "published", "published_at": T0}, "$unset": {"attempt_error": ""}},
    )
    assert await coll.find_one({"_id": "e"}) == {
        "_id": "e",
        "state": "published",
        "published_at": T0,
    }


async def test_inc(db: AsyncDatabase[Document]) -> None:
    coll = db["counters"]
    await coll.insert_one({"_id": "c", "n": 5, "stats": {"attempts": 1}})
    await coll.update_one(
        {"_id": "c"},
        {"$inc": {"n": 3, "stats.attempts": 1, "stats.failures": 1, "created": 10}},
    )
    assert await coll.find_one({"_id": "c"}) == {
        "_id": "c",
        "n": 8,
        "stats": {"attempts": 2, "failures": 1},
        "created": 10,  # a missing field starts from zero
    }
    await coll.update_one({"_id": "c"}, {"$inc": {"n": -8}})
    doc = await coll.find_one({"_id": "c"})
    assert doc is not None
    assert doc["n"] == 0


async def test_inc_with_set_and_version_filter(db: AsyncDatabase[Document]) -> None:
    """The shape of every aggregate write: guarded by version, version bumped."""
    coll = db["cases"]
    await coll.insert_one({"_id": "c", "status": "draft", "version": 1})
    result = await coll.update_one(
        {"_id": "c", "version": 1}, {"$set": {"status": "submitted"}, "$inc": {"version": 1}}
    )
    assert result.modified_count == 1
    assert await coll.find_one({"_id": "c"}) == {"_id": "c", "status": "submitted", "version": 2}


async def test_push_and_push_each(db: AsyncDatabase[Document]) -> None:
    coll = db["cases"]
    await coll.insert_one({"_id": "c", "timeline": [{"status": "draft", "at": T0}]})

    await coll.update_one(
        {"_id": "c"}, {"$push": {"timeline": {"status": "submitted", "at": T0}, "tags": "new"}}
    )
    events = [{"id": "e1", "type": "a"}, {"id": "e2", "type": "b"}]
    await coll.update_one({"_id": "c"}, {"$push": {"outbox": {"$each": events}}})
    await coll.update_one({"_id": "c"}, {"$push": {"outbox": {"$each": []}}})
    await coll.update_one({"_id": "c"}, {"$push": {"outbox": {"$each": [{"id": "e3"}]}}})
    await coll.update_one({"_id": "c"}, {"$push": {"meta.seen": "x"}})

    assert await coll.find_one({"_id": "c"}) == {
        "_id": "c",
        "timeline": [{"status": "draft", "at": T0}, {"status": "submitted", "at": T0}],
        "tags": ["new"],  # a missing array is created
        "outbox": [{"id": "e1", "type": "a"}, {"id": "e2", "type": "b"}, {"id": "e3"}],
        "meta": {"seen": ["x"]},
    }


async def test_pull_whole_embedded_document(db: AsyncDatabase[Document]) -> None:
    """$pull of an element given whole, as it was stored: removes every equal element."""
    coll = db["cases"]
    e1 = {"id": "e1", "topic": "case-submitted", "at": T0}
    e2 = {"id": "e2", "topic": "case-submitted", "at": T0}
    await coll.insert_one({"_id": "c", "outbox": [e1, e2, dict(e1)], "tags": ["a", "b", "a"]})

    result = await coll.update_one({"_id": "c"}, {"$pull": {"outbox": e1, "tags": "a"}})
    assert result.modified_count == 1
    assert await coll.find_one({"_id": "c"}) == {"_id": "c", "outbox": [e2], "tags": ["b"]}

    # pulling something absent matches and modifies nothing
    noop = await coll.update_one({"_id": "c"}, {"$pull": {"outbox": e1}})
    assert (noop.matched_count, noop.modified_count) == (1, 0)

    # combined with a version guard, as the relay's owner does it
    await coll.update_one({"_id": "c"}, {"$set": {"version": 1}})
    guarded = await coll.update_one(
        {"_id": "c", "version": 1}, {"$pull": {"outbox": e2}, "$inc": {"version": 1}}
    )
    assert guarded.modified_count == 1
    assert await coll.find_one({"_id": "c"}) == {
        "_id": "c",
        "outbox": [],
        "tags": ["b"],
        "version": 2,
    }


@pytest.mark.ferretdb_differs(
    reason="$pull with a document compares it to each element for exact equality; "
    "MongoDB treats it as a query on the element (a subset of fields matches)"
)
async def test_pull_with_partial_document_matches_as_query(db: AsyncDatabase[Document]) -> None:
    """Not relied on: MongoDB's $pull removes elements that merely contain the given fields."""
    coll = db["cases"]
    await coll.insert_one({"_id": "c", "outbox": [{"id": "e1", "n": 1}, {"id": "e2", "n": 2}]})
    await coll.update_one({"_id": "c"}, {"$pull": {"outbox": {"id": "e1"}}})
    assert await coll.find_one({"_id": "c"}) == {"_id": "c", "outbox": [{"id": "e2", "n": 2}]}


@pytest.mark.ferretdb_differs(
    reason="$pull with a document in another field order than the stored element removes nothing"
)
async def test_pull_with_reordered_document_matches(db: AsyncDatabase[Document]) -> None:
    """Not relied on: MongoDB's $pull ignores the field order of the given document."""
    coll = db["cases"]
    await coll.insert_one({"_id": "c", "outbox": [{"id": "e1", "n": 1}, {"id": "e2", "n": 2}]})
    await coll.update_one({"_id": "c"}, {"$pull": {"outbox": {"n": 1, "id": "e1"}}})
    assert await coll.find_one({"_id": "c"}) == {"_id": "c", "outbox": [{"id": "e2", "n": 2}]}


# --- upserts ---------------------------------------------------------------------------------


async def test_update_one_upsert(db: AsyncDatabase[Document]) -> None:
    coll = db["effects"]
    first = await coll.update_one(
        {"_id": "evt-1"}, {"$set": {"state": "applied", "at": T0}}, upsert=True
    )
    assert first.upserted_id == "evt-1"
    assert (first.matched_count, first.modified_count) == (0, 0)

    second = await coll.update_one({"_id": "evt-1"}, {"$set": {"state": "applied"}}, upsert=True)
    assert second.upserted_id is None
    assert (second.matched_count, second.modified_count) == (1, 0)
    assert await coll.count_documents({}) == 1

    # equality fields of the filter become fields of the inserted document
    third = await coll.update_one(
        {"case_id": "c-9", "kind": "reminder"}, {"$inc": {"count": 1}}, upsert=True
    )
    doc = await coll.find_one({"_id": third.upserted_id})
    assert doc is not None
    assert {k: doc[k] for k in ("case_id", "kind", "count")} == {
        "case_id": "c-9",
        "kind": "reminder",
        "count": 1,
    }


async def test_set_on_insert_with_upsert(db: AsyncDatabase[Document]) -> None:
    coll = db["subscriptions"]
    update = {
        "$setOnInsert": {"created_at": T0, "status": "active"},
        "$set": {"url": "https://partner.example/hook"},
    }
    inserted = await coll.update_one({"_id": "sub-1"}, update, upsert=True)
    assert inserted.upserted_id == "sub-1"
    assert await coll.find_one({"_id": "sub-1"}) == {
        "_id": "sub-1",
        "created_at": T0,
        "status": "active",
        "url": "https://partner.example/hook",
    }

    later = datetime(2027, 1, 1, tzinfo=UTC)
    matched = await coll.update_one(
        {"_id": "sub-1"},
        {"$setOnInsert": {"created_at": later, "status": "x"}, "$set": {"url": "https://b/"}},
        upsert=True,
    )
    assert matched.upserted_id is None
    assert matched.matched_count == 1
    assert await coll.find_one({"_id": "sub-1"}) == {
        "_id": "sub-1",
        "created_at": T0,  # $setOnInsert ignored on a match
        "status": "active",
        "url": "https://b/",
    }

    # only $setOnInsert: a no-op on an existing document
    noop = await coll.update_one({"_id": "sub-1"}, {"$setOnInsert": {"status": "y"}}, upsert=True)
    assert (noop.matched_count, noop.modified_count, noop.upserted_id) == (1, 0, None)


async def test_find_one_and_update_return_after_and_before(db: AsyncDatabase[Document]) -> None:
    coll = db["sequences"]
    await coll.insert_one({"_id": "seq", "next": 1, "version": 1})

    after = await coll.find_one_and_update(
        {"_id": "seq"}, {"$inc": {"next": 10, "version": 1}}, return_document=ReturnDocument.AFTER
    )
    assert after == {"_id": "seq", "next": 11, "version": 2}

    before = await coll.find_one_and_update(
        {"_id": "seq"}, {"$inc": {"next": 10}}, return_document=ReturnDocument.BEFORE
    )
    assert before == {"_id": "seq", "next": 11, "version": 2}
    assert await coll.find_one({"_id": "seq"}) == {"_id": "seq", "next": 21, "version": 2}

    # BEFORE is the default
    default = await coll.find_one_and_update({"_id": "seq"}, {"$set": {"next": 0}})
    assert default is not None
    assert default["next"] == 21


@pytest.mark.ferretdb_differs(
    reason="findAndModify with a projection ('fields') fails: OperationFailure code 238 "
    "NotImplemented"
)
async def test_find_one_and_update_with_projection(db: AsyncDatabase[Document]) -> None:
    """Not relied on: project in Python after the call instead."""
    coll = db["sequences"]
    await coll.insert_one({"_id": "seq", "next": 1, "version": 1})
    projected = await coll.find_one_and_update(
        {"_id": "seq"},
        {"$inc": {"next": 1}},
        projection={"next": 1, "_id": 0},
        return_document=ReturnDocument.AFTER,
    )
    assert projected == {"next": 2}


async def test_find_one_and_update_with_upsert(db: AsyncDatabase[Document]) -> None:
    coll = db["sequences"]
    created = await coll.find_one_and_update(
        {"_id": "seq-a"},
        {"$inc": {"next": 100}, "$setOnInsert": {"created_at": T0}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    assert created == {"_id": "seq-a", "next": 100, "created_at": T0}

    # BEFORE with an upsert that inserts returns None: there was nothing before
    before = await coll.find_one_and_update(
        {"_id": "seq-b"},
        {"$inc": {"next": 100}},
        upsert=True,
        return_document=ReturnDocument.BEFORE,
    )
    assert before is None
    assert await coll.find_one({"_id": "seq-b"}) == {"_id": "seq-b", "next": 100}

    again = await coll.find_one_and_update(
        {"_id": "seq-a"},
        {"$inc": {"next": 100}, "$setOnInsert": {"created_at": datetime(2030, 1, 1, tzinfo=UTC)}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    assert again == {"_id": "seq-a", "next": 200, "created_at": T0}


async def test_find_one_and_update_no_match_returns_none(db: AsyncDatabase[Document]) -> None:
    coll = db["cases"]
    await coll.insert_one({"_id": "c", "status": "draft", "version": 1})
    for return_document in (ReturnDocument.AFTER, ReturnDocument.BEFORE):
        assert (
            await coll.find_one_and_update(
                {"_id": "c", "version": 7},
                {"$set": {"status": "submitted"}},
                return_document=return_document,
            )
            is None
        )
        assert (
            await coll.find_one_and_update(
                {"_id": "nope"}, {"$set": {"status": "x"}}, return_document=return_document
            )
            is None
        )
    assert await coll.find_one({"_id": "c"}) == {"_id": "c", "status": "draft", "version": 1}
    assert await coll.count_documents({}) == 1


async def test_find_one_and_update_with_sort_picks_first(db: AsyncDatabase[Document]) -> None:
    """Claiming the oldest pending item (e.g. a delivery to retry) in one write."""
    coll = db["deliveries"]
    await coll.insert_many(
        [
            {"_id": "d3", "state": "pending", "due": datetime(2026, 3, 3, tzinfo=UTC)},
            {"_id": "d1", "state": "pending", "due": datetime(2026, 3, 1, tzinfo=UTC)},
            {"_id": "d2", "state": "done", "due": datetime(2026, 2, 1, tzinfo=UTC)},
        ]
    )
    claimed = await coll.find_one_and_update(
        {"state": "pending"},
        {"$set": {"state": "sending"}},
        sort=[("due", 1)],
        return_document=ReturnDocument.AFTER,
    )
    assert claimed is not None
    assert (claimed["_id"], claimed["state"]) == ("d1", "sending")


async def test_find_one_and_delete_and_replace(db: AsyncDatabase[Document]) -> None:
    coll = db["leases"]
    await coll.insert_one({"_id": "l", "owner": "a"})
    replaced = await coll.find_one_and_replace(
        {"_id": "l", "owner": "a"}, {"owner": "b"}, return_document=ReturnDocument.AFTER
    )
    assert replaced == {"_id": "l", "owner": "b"}
    deleted = await coll.find_one_and_delete({"_id": "l", "owner": "b"})
    assert deleted == {"_id": "l", "owner": "b"}
    assert await coll.find_one_and_delete({"_id": "l"}) is None
