"""The review service's MongoDB collections, indexes and queries (within the store contract).

- `reviewers`: the directory, `_id` = reviewer id (= the `sub` of their token).
- `cases`: what review knows of a case (triage codes, its trace, its matching state and its
  place in the queue), `_id` = case id.
- `assignments`: one document per assignment round, `_id` derived from the case id and the
  round (sorting by round), so a round is created once however often its cause is replayed.
  The assignment is the aggregate that carries the outbox of every event review publishes;
  its opinion versions live in it.

Load is never a counter: it is the number of a reviewer's assignments still assigned or
accepted, counted when a matching decision is made.
"""

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from avis.review.models import ACTIVE, CaseStatus, ReviewerIn
from avis.shared.mongo import Document

log = structlog.get_logger("avis.review.store")

# One create_index call per index: FerretDB mishandles several specs in one createIndexes.
INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    "reviewers": [[("specialties", ASCENDING)], [("active", ASCENDING)]],
    "cases": [[("status", ASCENDING), ("queue_key", ASCENDING)]],
    "assignments": [
        [("case_id", ASCENDING)],
        [("reviewer_id", ASCENDING), ("status", ASCENDING)],
        [("status", ASCENDING), ("due_at", ASCENDING)],
        [("sort_key", ASCENDING)],
    ],
}


def now() -> datetime:
    """The current time at the store's precision (milliseconds), so what is stored is what was
    published."""
    at = datetime.now(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


async def init(db: AsyncDatabase[Document], seed_file: Path | None = None) -> None:
    """Create the indexes; fill an empty reviewer directory from `seed_file` when given."""
    for collection, indexes in INDEXES.items():
        for keys in indexes:
            await db[collection].create_index(keys)
    if seed_file is not None:
        await seed_reviewers(db["reviewers"], seed_file)


def load_seed(seed_file: Path) -> list[ReviewerIn]:
    """The reviewers listed in a seed file (`{"reviewers": [...]}`), validated."""
    data = json.loads(seed_file.read_text(encoding="utf-8"))
    return [ReviewerIn.model_validate(item) for item in data["reviewers"]]


async def seed_reviewers(reviewers: AsyncCollection[Document], seed_file: Path) -> int:
    """Insert the seed reviewers if the directory is empty; returns how many were inserted."""
    if await reviewers.find_one({}, {"_id": 1}) is not None:
        return 0
    inserted = 0
    for reviewer in load_seed(seed_file):
        try:
            await reviewers.insert_one(reviewer_doc(reviewer, now()))
            inserted += 1
        except DuplicateKeyError:
            pass  # another instance seeded it first
    log.info("reviewer directory seeded", count=inserted, file=seed_file.name)
    return inserted


def reviewer_doc(reviewer: ReviewerIn, at: datetime) -> Document:
    """The stored form of a new reviewer."""
    fields = reviewer.model_dump(mode="json", exclude={"id"})
    return {"_id": reviewer.id, **fields, "created_at": at, "updated_at": at}


class Store:
    """Queries over review's collections; writers hold the aggregate's lock around them."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.reviewers = db["reviewers"]
        self.cases = db["cases"]
        self.assignments = db["assignments"]

    # reviewers

    async def reviewer(self, reviewer_id: str) -> Document | None:
        """One reviewer by id."""
        return await self.reviewers.find_one({"_id": reviewer_id})

    async def reviewers_page(
        self, query: dict[str, Any], after: str | None, limit: int
    ) -> list[Document]:
        """Up to `limit` reviewers matching `query`, by id, after the id `after`."""
        if after is not None:
            query = {**query, "_id": {"$gt": after}}
        return await self.reviewers.find(query).sort("_id", ASCENDING).to_list(limit)

    async def active_reviewers_of(self, specialty: str) -> list[Document]:
        """The active reviewers of a specialty, by id."""
        cursor = self.reviewers.find({"specialties": specialty, "active": True})
        return await cursor.sort("_id", ASCENDING).to_list(None)

    async def loads(self, reviewer_ids: list[str]) -> dict[str, int]:
        """How many assignments each reviewer has assigned or accepted right now."""
        if not reviewer_ids:
            return {}
        active = self.assignments.find(
            {"reviewer_id": {"$in": reviewer_ids}, "status": {"$in": [s.value for s in ACTIVE]}},
            {"reviewer_id": 1},
        )
        counted = Counter([doc["reviewer_id"] async for doc in active])
        return {rid: counted.get(rid, 0) for rid in reviewer_ids}

    # cases

    async def case(self, case_id: str) -> Document | None:
        """What review knows of one case."""
        return await self.cases.find_one({"_id": case_id})

    async def cases_in(self, status: CaseStatus) -> list[Document]:
        """Every case in a status, in queue order."""
        cursor = self.cases.find({"status": status.value}).sort("queue_key", ASCENDING)
        return await cursor.to_list(None)

    async def queue_page(
        self, query: dict[str, Any], after: str | None, limit: int
    ) -> list[Document]:
        """Up to `limit` waiting cases matching `query`, in queue order, after `after`."""
        query = {**query, "status": CaseStatus.WAITING.value}
        if after is not None:
            query["queue_key"] = {"$gt": after}
        return await self.cases.find(query).sort("queue_key", ASCENDING).to_list(limit)

    # assignments

    async def assignment(self, assignment_id: str) -> Document | None:
        """One assignment, without its outbox."""
        return await self.assignments.find_one(
            {"_id": assignment_id}, {"outbox": 0, "outbox_pending": 0}
        )

    async def assignments_of(self, case_id: str) -> list[Document]:
        """Every round of a case, first round first."""
        cursor = self.assignments.find({"case_id": case_id}, {"outbox": 0, "outbox_pending": 0})
        return await cursor.sort("round", ASCENDING).to_list(None)

    async def assignments_page(
        self, query: dict[str, Any], after: str | None, limit: int
    ) -> list[Document]:
        """Up to `limit` assignments matching `query`, soonest due first, after `after`."""
        if after is not None:
            query = {"$and": [query, {"sort_key": {"$gt": after}}]}
        cursor = self.assignments.find(query, {"outbox": 0, "outbox_pending": 0})
        return await cursor.sort("sort_key", ASCENDING).to_list(limit)

    async def count_overdue(self, at: datetime) -> int:
        """Active assignments whose due date has passed."""
        return await self.assignments.count_documents(overdue_query(at))


def overdue_query(at: datetime) -> dict[str, Any]:
    """Assignments past due and not answered."""
    return {"status": {"$in": [s.value for s in ACTIVE]}, "due_at": {"$lt": at}}


def not_overdue_query(at: datetime) -> dict[str, Any]:
    """Assignments answered, ended, or not yet due."""
    return {"$or": [{"status": {"$nin": [s.value for s in ACTIVE]}}, {"due_at": {"$gte": at}}]}
