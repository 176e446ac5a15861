"""Store contract: unique indexes and uniqueness claimed through a natural `_id`."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

pytestmark = pytest.mark.infra

Document = dict[str, Any]


async def _claim(coll: AsyncCollection[Document], doc: Document) -> bool:
    """The services' idiom: insert under a natural `_id`; a duplicate means already claimed."""
    try:
        await coll.insert_one(doc)
    except DuplicateKeyError:
        return False
    return True


async def test_duplicate_id_raises_duplicate_key_error(db: AsyncDatabase[Document]) -> None:
    coll = db["cases"]
    await coll.insert_one({"_id": "case-1", "v": 1})
    with pytest.raises(DuplicateKeyError) as caught:
        await coll.insert_one({"_id": "case-1", "v": 2})
    assert caught.value.code == 11000
    # the first write stands
    assert await coll.find_one({"_id": "case-1"}) == {"_id": "case-1", "v": 1}


async def test_claim_uniqueness_with_natural_id(db: AsyncDatabase[Document]) -> None:
    documents = db["documents"]
    content = b"%PDF-1.7 imaging report"
    natural_id = f"case-1:{hashlib.sha256(content).hexdigest()}"

    assert await _claim(documents, {"_id": natural_id, "name": "report.pdf"}) is True
    assert await _claim(documents, {"_id": natural_id, "name": "again.pdf"}) is False
    # the same content in another case is another claim
    other = f"case-2:{hashlib.sha256(content).hexdigest()}"
    assert await _claim(documents, {"_id": other, "name": "report.pdf"}) is True

    assert await documents.count_documents({}) == 2
    doc = await documents.find_one({"_id": natural_id})
    assert doc is not None
    assert doc["name"] == "report.pdf"


async def test_claim_processed_event_ids(db: AsyncDatabase[Document]) -> None:
    """An inbox of processed event ids: a redelivered event is recognised."""
    inbox = db["inbox"]
    event_ids = ["evt-1", "evt-2", "evt-1", "evt-3", "evt-2"]
    outcomes = [await _claim(inbox, {"_id": eid}) for eid in event_ids]
    assert outcomes == [True, True, False, True, False]


async def test_unique_single_field_index(db: AsyncDatabase[Document]) -> None:
    coll = db["reviewers"]
    name = await coll.create_index("email_hash", unique=True)
    await coll.insert_one({"_id": "r-1", "email_hash": "h1"})
    await coll.insert_one({"_id": "r-2", "email_hash": "h2"})
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"_id": "r-3", "email_hash": "h1"})
    assert await coll.count_documents({}) == 2

    # an upsert that would insert a duplicate fails the same way
    with pytest.raises(DuplicateKeyError):
        await coll.update_one({"_id": "r-4"}, {"$set": {"email_hash": "h2"}}, upsert=True)
    assert await coll.count_documents({}) == 2

    info = await coll.index_information()
    assert info[name]["unique"] is True
    assert info[name]["key"] == [("email_hash", 1)]


@pytest.mark.ferretdb_differs(
    reason="an update, replace or findAndModify of an existing document that would violate a "
    "unique index fails with OperationFailure code 1 (InternalError, 'UNIQUE constraint "
    "failed'), not DuplicateKeyError 11000; the document is left unchanged"
)
async def test_update_into_duplicate_raises_duplicate_key_error(
    db: AsyncDatabase[Document],
) -> None:
    """Not relied on: only inserts (and upsert-inserts) claim uniqueness in the services."""
    coll = db["reviewers"]
    await coll.create_index("email_hash", unique=True)
    await coll.insert_many([{"_id": "r-1", "email_hash": "h1"}, {"_id": "r-2", "email_hash": "h2"}])
    try:
        with pytest.raises(DuplicateKeyError):
            await coll.update_one({"_id": "r-2"}, {"$set": {"email_hash": "h1"}})
        with pytest.raises(DuplicateKeyError):
            await coll.replace_one({"_id": "r-2"}, {"email_hash": "h1"})
        with pytest.raises(DuplicateKeyError):
            await coll.find_one_and_update({"_id": "r-2"}, {"$set": {"email_hash": "h1"}})
    finally:
        doc = await coll.find_one({"_id": "r-2"})
        assert doc == {"_id": "r-2", "email_hash": "h2"}


async def test_unique_compound_index(db: AsyncDatabase[Document]) -> None:
    coll = db["assignments"]
    await coll.create_index([("case_id", ASCENDING), ("reviewer_id", ASCENDING)], unique=True)
    await coll.insert_one({"case_id": "c-1", "reviewer_id": "r-1"})
    await coll.insert_one({"case_id": "c-1", "reviewer_id": "r-2"})  # same case, other reviewer
    await coll.insert_one({"case_id": "c-2", "reviewer_id": "r-1"})  # same reviewer, other case
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"case_id": "c-1", "reviewer_id": "r-1", "extra": True})
    assert await coll.count_documents({}) == 3


async def test_unique_index_on_upsert_key(db: AsyncDatabase[Document]) -> None:
    """An upsert on a uniquely indexed natural key inserts once, then matches."""
    coll = db["subscriptions"]
    await coll.create_index([("partner_id", ASCENDING), ("topic", ASCENDING)], unique=True)
    key = {"partner_id": "p-1", "topic": "report-ready"}
    first = await coll.update_one(key, {"$set": {"url": "https://a/"}}, upsert=True)
    second = await coll.update_one(key, {"$set": {"url": "https://b/"}}, upsert=True)
    assert first.upserted_id is not None
    assert second.upserted_id is None
    assert second.matched_count == 1
    docs = await coll.find(key).to_list()
    assert [d["url"] for d in docs] == ["https://b/"]


async def test_create_index_is_idempotent(db: AsyncDatabase[Document]) -> None:
    coll = db["reports"]
    first = await coll.create_index([("case_id", ASCENDING), ("version", DESCENDING)], unique=True)
    second = await coll.create_index([("case_id", ASCENDING), ("version", DESCENDING)], unique=True)
    assert first == second == "case_id_1_version_-1"

    third = await coll.create_index("status")
    assert third == await coll.create_index("status") == "status_1"

    info = await coll.index_information()
    assert set(info) == {"_id_", "case_id_1_version_-1", "status_1"}
    assert info["case_id_1_version_-1"].get("unique") is True
    assert not info["status_1"].get("unique", False)

    # and the unique one still holds
    await coll.insert_one({"case_id": "c", "version": 1})
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"case_id": "c", "version": 1})


@pytest.mark.ferretdb_differs(
    reason="createIndexes with two or more specs of which some or all already exist makes "
    "FerretDB panic ('runtime error: slice bounds out of range'): the server closes the "
    "connection and pymongo raises AutoReconnect (seen for batches of 2 to 5 specs); one "
    "spec per call is fine"
)
async def test_create_indexes_batch_is_idempotent(db: AsyncDatabase[Document]) -> None:
    """Not relied on: create indexes one create_index call per index at start-up."""
    models = [
        IndexModel([("case_id", ASCENDING), ("version", DESCENDING)], unique=True),
        IndexModel([("status", ASCENDING), ("updated_at", ASCENDING)]),
        IndexModel([("partner_id", ASCENDING)]),
    ]
    names = ["case_id_1_version_-1", "status_1_updated_at_1", "partner_id_1"]
    assert await db["reports"].create_indexes(models) == names
    assert await db["reports"].create_indexes(models) == names


@pytest.mark.ferretdb_differs(
    reason="creating a unique index over existing duplicates fails with code 1 "
    "(InternalError, 'UNIQUE constraint failed'), not 11000 (DuplicateKeyError)"
)
async def test_create_unique_index_over_duplicates_fails(db: AsyncDatabase[Document]) -> None:
    """Adding a unique index late does not silently drop or keep duplicates."""
    coll = db["late"]
    await coll.insert_many([{"k": 1}, {"k": 1}])
    with pytest.raises(OperationFailure) as caught:
        await coll.create_index("k", unique=True)
    assert caught.value.code == 11000
    assert "k_1" not in await coll.index_information()
