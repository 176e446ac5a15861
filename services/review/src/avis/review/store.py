"""Review's repository: the stored documents as typed models, every MongoDB operator, indexes.

- `reviewers`: the directory, `_id` = reviewer id (= the `sub` of their token).
- `cases`: what review knows of a case (triage codes, its trace, its matching state and its
  place in the queue), `_id` = case id. A case withdrawn before its submission arrived is a
  tombstone: `_id`, `status: withdrawn`, and no triage.
- `assignments`: one document per assignment round, `_id` derived from the case id and the
  round (sorting by round), so a round is created once however often its cause is replayed.
  The assignment is the aggregate that carries the outbox of every event review publishes;
  its opinion versions live in it.

Load is never a counter: it is the number of a reviewer's assignments still assigned or
accepted, counted when a matching decision is made. Writers hold the aggregate's lock around
every write (the store does not serialise them).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from avis.review.models import (
    ACTIVE,
    AssignmentStatus,
    CaseStatus,
    DeclineReason,
    Rationale,
    ReviewerIn,
)
from avis.shared.clock import now
from avis.shared.envelope import Event
from avis.shared.events import Language, Specialty, Urgency
from avis.shared.mongo import Document
from avis.shared.outbox import new_with_events, with_events

log = structlog.get_logger("avis.review.store")

WITHOUT_OUTBOX = {"outbox": 0, "outbox_pending": 0}
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
_ACTIVE = [s.value for s in ACTIVE]


# --- documents ------------------------------------------------------------------------------


class Stored(BaseModel):
    """A stored document: `_id` read as `id`, fields the code no longer knows ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def to_doc(self) -> Document:
        """The document as written: a top-level field not set yet (None) is left out."""
        return {k: v for k, v in self.model_dump(by_alias=True).items() if v is not None}


class ReviewerDoc(Stored):
    """A reviewer of the directory."""

    id: str = Field(alias="_id")
    display_name: str
    specialties: list[Specialty]
    languages: list[Language]
    institution_code: str | None = None
    capacity: int
    active: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def new(cls, reviewer: ReviewerIn, at: datetime) -> ReviewerDoc:
        """The stored form of a new reviewer."""
        return cls.model_validate({**reviewer.model_dump(), "created_at": at, "updated_at": at})

    def same_as(self, reviewer: ReviewerIn) -> bool:
        """Whether `reviewer` repeats this one exactly (a replayed creation)."""
        mine = self.model_dump(mode="json", exclude={"created_at", "updated_at"})
        return mine == reviewer.model_dump(mode="json")


@dataclass(frozen=True)
class Triage:
    """A submitted case's codes (a tombstone has none)."""

    specialty: Specialty
    urgency: Urgency
    language: Language
    submitted_at: datetime


class CaseDoc(Stored):
    """What review knows of a case."""

    id: str = Field(alias="_id")
    status: CaseStatus
    round: int = 0
    reference: str = ""
    specialty: Specialty | None = None
    urgency: Urgency | None = None
    language: Language | None = None
    physician_institution: str | None = None
    submitted_at: datetime | None = None
    case_url: str = ""
    traceparent: str = ""
    queue_key: str | None = None
    received_at: datetime | None = None
    withdrawn_at: datetime | None = None
    waiting_since: datetime | None = None
    last_attempt: Rationale | None = None
    assignment_id: str | None = None

    def triage(self) -> Triage:
        """The case's codes; only a tombstone lacks them, and a tombstone is never matched."""
        if None in (self.specialty, self.urgency, self.language, self.submitted_at):
            raise ValueError(f"case {self.id} has no triage (a withdrawal tombstone)")
        assert self.specialty and self.urgency and self.language and self.submitted_at
        return Triage(self.specialty, self.urgency, self.language, self.submitted_at)


class Decline(BaseModel):
    """Why a reviewer declined: the published code and the free text kept here."""

    reason_code: DeclineReason
    reason: str | None = None


class OpinionEntry(BaseModel):
    """One version of an assignment's opinion."""

    version: int
    digest: str
    completed_at: datetime
    event_id: str
    opinion: dict[str, Any]


class AssignmentDoc(Stored):
    """One assignment round (the aggregate carrying review's outbox)."""

    id: str = Field(alias="_id")
    case_id: str
    round: int
    reviewer_id: str
    status: AssignmentStatus
    reference: str = ""
    specialty: Specialty
    urgency: Urgency
    language: Language
    case_url: str = ""
    traceparent: str = ""
    assigned_at: datetime
    due_at: datetime
    sort_key: str
    rationale: Rationale | None = None
    opinions: list[OpinionEntry] = Field(default_factory=list)
    accepted_at: datetime | None = None
    declined_at: datetime | None = None
    decline: Decline | None = None
    completed_at: datetime | None = None
    corrected_at: datetime | None = None
    cancelled_at: datetime | None = None
    opinion_version: int | None = None


# --- the repository -------------------------------------------------------------------------


class Store:
    """Review's collections and every operation on them."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.reviewers = db["reviewers"]
        self.cases = db["cases"]
        self.assignments = db["assignments"]

    # reviewers

    async def reviewer(self, reviewer_id: str) -> ReviewerDoc | None:
        """One reviewer by id."""
        doc = await self.reviewers.find_one({"_id": reviewer_id})
        return ReviewerDoc.model_validate(doc) if doc else None

    async def insert_reviewer(self, reviewer: ReviewerDoc) -> bool:
        """Add a reviewer; False if the id is taken."""
        try:
            await self.reviewers.insert_one(reviewer.to_doc())
        except DuplicateKeyError:
            return False
        return True

    async def update_reviewer(
        self, reviewer_id: str, changes: dict[str, Any], at: datetime
    ) -> None:
        """Set some fields of a reviewer."""
        await self.reviewers.update_one(
            {"_id": reviewer_id}, {"$set": {**changes, "updated_at": at}}
        )

    async def reviewers_page(
        self,
        *,
        specialty: Specialty | None,
        language: Language | None,
        active: bool | None,
        after: str | None,
        limit: int,
    ) -> list[ReviewerDoc]:
        """Up to `limit` reviewers matching the filters, by id, after the id `after`."""
        query: dict[str, Any] = {}
        if specialty is not None:
            query["specialties"] = specialty.value
        if language is not None:
            query["languages"] = language.value
        if active is not None:
            query["active"] = active
        if after is not None:
            query["_id"] = {"$gt": after}
        found = await self.reviewers.find(query).sort("_id", ASCENDING).to_list(limit)
        return [ReviewerDoc.model_validate(d) for d in found]

    async def active_reviewers_of(self, specialty: str) -> list[ReviewerDoc]:
        """The active reviewers of a specialty, by id."""
        cursor = self.reviewers.find({"specialties": specialty, "active": True})
        return [ReviewerDoc.model_validate(d) for d in await cursor.sort("_id", 1).to_list(None)]

    async def loads(self, reviewer_ids: list[str]) -> dict[str, int]:
        """How many assignments each reviewer has assigned or accepted right now."""
        if not reviewer_ids:
            return {}
        active = self.assignments.find(
            {"reviewer_id": {"$in": reviewer_ids}, "status": {"$in": _ACTIVE}}, {"reviewer_id": 1}
        )
        counted = Counter([doc["reviewer_id"] async for doc in active])
        return {rid: counted.get(rid, 0) for rid in reviewer_ids}

    async def load(self, reviewer_id: str) -> int:
        """How many assignments one reviewer has assigned or accepted right now."""
        return (await self.loads([reviewer_id]))[reviewer_id]

    # cases

    async def case(self, case_id: str) -> CaseDoc | None:
        """What review knows of one case."""
        doc = await self.cases.find_one({"_id": case_id})
        return CaseDoc.model_validate(doc) if doc else None

    async def insert_case(self, case: CaseDoc) -> bool:
        """Write a case review has not seen; False if it is already there (or a tombstone)."""
        try:
            await self.cases.insert_one(case.to_doc())
        except DuplicateKeyError:
            return False
        return True

    async def set_case_withdrawn(self, case_id: str, at: datetime) -> None:
        """Mark a known case withdrawn."""
        await self.cases.update_one(
            {"_id": case_id}, {"$set": {"status": CaseStatus.WITHDRAWN.value, "withdrawn_at": at}}
        )

    async def set_case_matching(self, case_id: str) -> None:
        """Mark a case as due for a matching decision."""
        await self.cases.update_one(
            {"_id": case_id}, {"$set": {"status": CaseStatus.MATCHING.value}}
        )

    async def set_case_waiting(
        self, case_id: str, *, since: datetime, last_attempt: Rationale
    ) -> None:
        """Put a case in the queue, with the matching attempt that found nobody."""
        await self.cases.update_one(
            {"_id": case_id},
            {
                "$set": {
                    "status": CaseStatus.WAITING.value,
                    "waiting_since": since,
                    "last_attempt": last_attempt.model_dump(mode="python"),
                }
            },
        )

    async def set_case_assigned(
        self, case_id: str, *, assignment_id: str, round_: int, left_queue: bool
    ) -> None:
        """Record a case's current assignment round (`left_queue`: drop its queue data)."""
        update: dict[str, Any] = {
            "$set": {
                "status": CaseStatus.ASSIGNED.value,
                "assignment_id": assignment_id,
                "round": round_,
            }
        }
        if left_queue:
            update["$unset"] = {"waiting_since": "", "last_attempt": ""}
        await self.cases.update_one({"_id": case_id}, update)

    async def cases_in(self, status: CaseStatus) -> list[CaseDoc]:
        """Every case in a status, in queue order."""
        cursor = self.cases.find({"status": status.value}).sort("queue_key", ASCENDING)
        return [CaseDoc.model_validate(d) for d in await cursor.to_list(None)]

    async def queue_page(
        self,
        *,
        specialty: Specialty | None,
        urgency: Urgency | None,
        after: str | None,
        limit: int,
    ) -> list[CaseDoc]:
        """Up to `limit` waiting cases matching the filters, in queue order, after `after`."""
        query: dict[str, Any] = {"status": CaseStatus.WAITING.value}
        if specialty is not None:
            query["specialty"] = specialty.value
        if urgency is not None:
            query["urgency"] = urgency.value
        if after is not None:
            query["queue_key"] = {"$gt": after}
        found = await self.cases.find(query).sort("queue_key", ASCENDING).to_list(limit)
        return [CaseDoc.model_validate(d) for d in found]

    # assignments

    async def assignment(self, assignment_id: str) -> AssignmentDoc | None:
        """One assignment, without its outbox."""
        doc = await self.assignments.find_one({"_id": assignment_id}, WITHOUT_OUTBOX)
        return AssignmentDoc.model_validate(doc) if doc else None

    async def assignments_of(self, case_id: str) -> list[AssignmentDoc]:
        """Every round of a case, first round first."""
        cursor = self.assignments.find({"case_id": case_id}, WITHOUT_OUTBOX).sort("round", 1)
        return [AssignmentDoc.model_validate(d) for d in await cursor.to_list(None)]

    async def declined_by(self, case_ids: list[str]) -> dict[str, list[str]]:
        """Who declined each of these cases, first round first."""
        declined: dict[str, list[str]] = {case_id: [] for case_id in case_ids}
        if not case_ids:
            return declined
        ended = self.assignments.find(
            {"case_id": {"$in": case_ids}, "status": AssignmentStatus.DECLINED.value},
            {"case_id": 1, "reviewer_id": 1, "round": 1},
        )
        async for row in ended.sort("round", ASCENDING):
            declined[row["case_id"]].append(row["reviewer_id"])
        return declined

    async def assignments_page(
        self,
        *,
        reviewer_id: str | None,
        status: AssignmentStatus | None,
        case_id: str | None,
        overdue_at: tuple[bool, datetime] | None,
        after: str | None,
        limit: int,
    ) -> list[AssignmentDoc]:
        """Up to `limit` assignments matching the filters, soonest due first, after `after`.

        `overdue_at` is `(True, at)` for those past due at `at` and not answered, `(False, at)`
        for the others.
        """
        clauses: list[dict[str, Any]] = []
        if reviewer_id is not None:
            clauses.append({"reviewer_id": reviewer_id})
        if status is not None:
            clauses.append({"status": status.value})
        if case_id is not None:
            clauses.append({"case_id": case_id})
        if overdue_at is not None:
            overdue, at = overdue_at
            clauses.append(_overdue(at) if overdue else _not_overdue(at))
        query = clauses[0] if len(clauses) == 1 else {"$and": clauses} if clauses else {}
        if after is not None:
            query = {"$and": [query, {"sort_key": {"$gt": after}}]}
        cursor = self.assignments.find(query, WITHOUT_OUTBOX).sort("sort_key", ASCENDING)
        return [AssignmentDoc.model_validate(d) for d in await cursor.to_list(limit)]

    async def count_overdue(self, at: datetime) -> int:
        """Active assignments whose due date has passed."""
        return await self.assignments.count_documents(_overdue(at))

    async def insert_assignment(self, assignment: AssignmentDoc, events: Sequence[Event]) -> None:
        """Write a new round with its events; a round already there (written by an attempt
        that stopped before updating its case) is kept as it is."""
        with contextlib.suppress(DuplicateKeyError):
            await self.assignments.insert_one(new_with_events(assignment.to_doc(), events))

    async def accept(self, assignment_id: str, *, at: datetime, events: Sequence[Event]) -> None:
        """Record an acceptance and its events in one write."""
        update = {"$set": {"status": AssignmentStatus.ACCEPTED.value, "accepted_at": at}}
        await self.assignments.update_one({"_id": assignment_id}, with_events(update, events))

    async def decline(
        self, assignment_id: str, *, at: datetime, decline: Decline, events: Sequence[Event]
    ) -> None:
        """Record a decline and its events in one write."""
        update = {
            "$set": {
                "status": AssignmentStatus.DECLINED.value,
                "declined_at": at,
                "decline": decline.model_dump(mode="json"),
            }
        }
        await self.assignments.update_one({"_id": assignment_id}, with_events(update, events))

    async def cancel(self, assignment_id: str, at: datetime) -> None:
        """End an assignment whose case was withdrawn."""
        await self.assignments.update_one(
            {"_id": assignment_id},
            {"$set": {"status": AssignmentStatus.CANCELLED.value, "cancelled_at": at}},
        )

    async def add_opinion(
        self, assignment_id: str, *, entry: OpinionEntry, events: Sequence[Event]
    ) -> None:
        """Record an opinion version (the first completes the assignment) and its events."""
        changes: dict[str, Any] = {
            "status": AssignmentStatus.COMPLETED.value,
            "opinion_version": entry.version,
            "completed_at" if entry.version == 1 else "corrected_at": entry.completed_at,
        }
        update = {"$set": changes, "$push": {"opinions": entry.model_dump()}}
        await self.assignments.update_one({"_id": assignment_id}, with_events(update, events))


def _overdue(at: datetime) -> dict[str, Any]:
    """Assignments past due and not answered."""
    return {"status": {"$in": _ACTIVE}, "due_at": {"$lt": at}}


def _not_overdue(at: datetime) -> dict[str, Any]:
    """Assignments answered, ended, or not yet due."""
    return {"$or": [{"status": {"$nin": _ACTIVE}}, {"due_at": {"$gte": at}}]}


# --- set-up ---------------------------------------------------------------------------------


async def init(db: AsyncDatabase[Document], seed_file: Path | None = None) -> None:
    """Create the indexes; fill an empty reviewer directory from `seed_file` when given."""
    for collection, indexes in INDEXES.items():
        for keys in indexes:
            await db[collection].create_index(keys)
    if seed_file is not None:
        await seed_reviewers(Store(db), seed_file)


def load_seed(seed_file: Path) -> list[ReviewerIn]:
    """The reviewers listed in a seed file (`{"reviewers": [...]}`), validated."""
    data = json.loads(seed_file.read_text(encoding="utf-8"))
    return [ReviewerIn.model_validate(item) for item in data["reviewers"]]


async def seed_reviewers(store: Store, seed_file: Path) -> int:
    """Insert the seed reviewers if the directory is empty; returns how many were inserted."""
    if await store.reviewers.find_one({}, {"_id": 1}) is not None:
        return 0
    inserted = 0
    for reviewer in load_seed(seed_file):
        # False: another instance seeded it first.
        inserted += await store.insert_reviewer(ReviewerDoc.new(reviewer, now()))
    log.info("reviewer directory seeded", count=inserted, file=seed_file.name)
    return inserted
