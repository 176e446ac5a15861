"""Intake's repository: the stored documents as typed models, every MongoDB operator, indexes.

- `cases`: one document per case (the aggregate): identity, clinical summary, consent,
  status, timeline, the current reviewer, and its outbox. `_id` is the case id.
- `documents`: record metadata; `_id` is `<case_id>:<sha256>`, so the same file twice on a
  case is one document. The bytes live in the GridFS bucket `records` under the same id.
- `refblocks`: claimed blocks of human references, `_id` `refblock:<year>:<block>`.
- `idempotency`: `_id` `<caller>:<Idempotency-Key>` -> the case that key created.
- `inbox_<day>`: the idempotent consumer's markers, one collection per day (shared plumbing).

Writers hold the case's lock around every write (the store does not serialise them); a state
change and the events it causes are one `update_one` (`avis.shared.outbox.with_events`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from avis.intake.models import (
    CaseStatus,
    ContentType,
    DocumentKind,
    TimelineKind,
)
from avis.intake.rules import Access, CaseState, Scope, refblock_id
from avis.shared.envelope import Event
from avis.shared.events import ConsentScope, Language, Question, Specialty, Urgency
from avis.shared.mongo import Document
from avis.shared.outbox import new_with_events, with_events

RECORDS_BUCKET = "records"
WITHOUT_OUTBOX = {"outbox": 0, "outbox_pending": 0}


class Stored(BaseModel):
    """A stored document: `_id` read as `id`, fields the code no longer knows ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def to_doc(self) -> Document:
        """The document as written."""
        return self.model_dump(by_alias=True)


class Actor(BaseModel):
    """Who did something: the token's subject and role."""

    sub: str
    role: str


class StoredPatient(BaseModel):
    """The patient's identity and contact (sealed when it travels)."""

    given_name: str
    family_name: str
    birth_date: str  # ISO date: what was entered, not a time
    email: str
    phone: str | None = None
    preferred_language: Language


class StoredPhysician(BaseModel):
    """The treating physician."""

    name: str | None = None
    institution_code: str | None = None


class StoredConsent(BaseModel):
    """The consent recorded at submission."""

    text_version: str
    accepted_at: datetime
    scopes: list[ConsentScope]
    recorded_at: datetime


class StoredEntry(BaseModel):
    """One timeline entry; `id` is the event id that caused it."""

    id: str
    kind: TimelineKind
    status: CaseStatus
    at: datetime


class Case(Stored):
    """The case aggregate (its outbox is the relay's business, not read here)."""

    id: str = Field(alias="_id")
    reference: str
    status: CaseStatus
    patient_id: str | None = None
    partner_id: str | None = None
    partner_reference: str | None = None
    created_by: Actor
    patient: StoredPatient
    physician: StoredPhysician | None = None
    specialty: Specialty
    urgency: Urgency
    language: Language
    questions: list[Question]
    clinical_summary: str
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None = None
    withdrawn_at: datetime | None = None
    consent: StoredConsent | None = None
    traceparent: str = ""
    reviewer_id: str | None = None
    assignment_id: str | None = None
    assignment_at: datetime | None = None
    timeline: list[StoredEntry] = Field(default_factory=list)

    @property
    def access(self) -> Access:
        """What the access policy looks at."""
        return Access(self.status, self.patient_id, self.partner_id, self.reviewer_id)

    @property
    def state(self) -> CaseState:
        """What decides what an event does to the case."""
        at = self.assignment_at
        return CaseState(
            status=self.status,
            timeline_ids=frozenset(e.id for e in self.timeline),
            assignment_id=self.assignment_id,
            assignment_at=at if at is None or at.tzinfo else at.replace(tzinfo=UTC),
        )


class CaseRow(Stored):
    """The part of a case a list shows."""

    id: str = Field(alias="_id")
    reference: str
    status: CaseStatus
    specialty: Specialty
    urgency: Urgency
    created_at: datetime
    updated_at: datetime


ROW = {name: 1 for name in CaseRow.model_fields if name != "id"}


class Record(Stored):
    """A record's metadata; its bytes are in the `records` bucket under the same id."""

    id: str = Field(alias="_id")
    case_id: str
    document_id: str
    sha256: str
    kind: DocumentKind
    content_type: ContentType
    size: int
    filename: str | None = None
    uploaded_at: datetime
    uploaded_by: Actor


class IdempotencyClaim(Stored):
    """Which case an Idempotency-Key created, and a digest of the request that used it."""

    id: str = Field(alias="_id")
    case_id: str
    fingerprint: str
    at: datetime


@dataclass(frozen=True)
class CurrentReviewer:
    """Who reviews a case now (all None: nobody; `assigned_at` None: keep the stored one)."""

    reviewer_id: str | None
    assignment_id: str | None
    assigned_at: datetime | None = None


class Store:
    """Intake's collections and every operation on them."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.cases = db["cases"]
        self.documents = db["documents"]
        self.refblocks = db["refblocks"]
        self.idempotency = db["idempotency"]

    def records(self) -> AsyncGridFSBucket:
        """The bucket holding the records' bytes."""
        return AsyncGridFSBucket(self.db, bucket_name=RECORDS_BUCKET)

    # cases

    async def case(self, case_id: str) -> Case | None:
        """One case, without its outbox."""
        doc = await self.cases.find_one({"_id": case_id}, WITHOUT_OUTBOX)
        return Case.model_validate(doc) if doc else None

    async def insert_case(self, case: Case) -> bool:
        """Write a new case; False if its id or reference is taken (the unique index says)."""
        try:
            await self.cases.insert_one(new_with_events(case.to_doc(), []))
        except DuplicateKeyError:
            return False
        return True

    async def cases_page(self, scope: Scope, after: str | None, limit: int) -> list[CaseRow]:
        """Up to `limit` cases in `scope`, newest (largest id) first, before the id `after`."""
        query: dict[str, Any] = {}
        if scope.field is not None:
            query[scope.field] = scope.value
        if scope.statuses is not None:
            statuses = [s.value for s in scope.statuses]
            query["status"] = statuses[0] if len(statuses) == 1 else {"$in": statuses}
        if after is not None:
            query["_id"] = {"$lt": after}
        found = self.cases.find(query, ROW).sort("_id", DESCENDING).limit(limit)
        return [CaseRow.model_validate(d) async for d in found]

    async def submit(
        self,
        case_id: str,
        *,
        at: datetime,
        consent: StoredConsent,
        traceparent: str,
        entry: StoredEntry,
        events: Sequence[Event],
    ) -> None:
        """Record the submission, its timeline entry and its events in one write."""
        update = {
            "$set": {
                "status": CaseStatus.SUBMITTED.value,
                "submitted_at": at,
                "updated_at": at,
                "traceparent": traceparent,
                "consent": consent.model_dump(),
            },
            "$push": {"timeline": entry.model_dump()},
        }
        await self.cases.update_one({"_id": case_id}, with_events(update, events))

    async def withdraw(
        self, case_id: str, *, at: datetime, entry: StoredEntry, events: Sequence[Event]
    ) -> None:
        """Record the withdrawal, its timeline entry and its events (if any) in one write."""
        update = {
            "$set": {"status": CaseStatus.WITHDRAWN.value, "withdrawn_at": at, "updated_at": at},
            "$push": {"timeline": entry.model_dump()},
        }
        await self.cases.update_one({"_id": case_id}, with_events(update, events))

    async def follow(
        self,
        case_id: str,
        *,
        status: CaseStatus,
        entry: StoredEntry,
        reviewer: CurrentReviewer | None,
        at: datetime,
    ) -> None:
        """Apply what another service reported: the status, a timeline entry and, when given,
        the current reviewer (None: keep it)."""
        fields: dict[str, Any] = {"status": status.value, "updated_at": at}
        if reviewer is not None:
            fields |= {"reviewer_id": reviewer.reviewer_id, "assignment_id": reviewer.assignment_id}
            if reviewer.assigned_at is not None:
                fields["assignment_at"] = reviewer.assigned_at
        await self.cases.update_one(
            {"_id": case_id}, {"$set": fields, "$push": {"timeline": entry.model_dump()}}
        )

    # idempotency keys and references

    async def claim_key(self, claim: IdempotencyClaim) -> IdempotencyClaim | None:
        """Claim an Idempotency-Key: None if this claim won, else the claim already there."""
        try:
            await self.idempotency.insert_one(claim.to_doc())
            return None
        except DuplicateKeyError:
            found = await self.idempotency.find_one({"_id": claim.id})
        # The claim vanished between insert and read: treat the key as new.
        return IdempotencyClaim.model_validate(found) if found else claim

    async def last_refblock(self, year: int) -> int | None:
        """The highest reference block claimed in `year`, if any."""
        prefix = refblock_id(year, 0)[: -len("000000")]
        last = await self.refblocks.find_one(
            {"_id": {"$gte": prefix, "$lt": prefix + "~"}}, {"_id": 1}, sort=[("_id", -1)]
        )
        return int(str(last["_id"]).rsplit(":", 1)[1]) if last else None

    async def claim_refblock(self, year: int, block: int, at: datetime) -> bool:
        """Claim a reference block; False if another instance holds it."""
        try:
            await self.refblocks.insert_one({"_id": refblock_id(year, block), "claimed_at": at})
        except DuplicateKeyError:
            return False
        return True

    # records

    async def record(self, record_id: str) -> Record | None:
        """One record's metadata."""
        doc = await self.documents.find_one({"_id": record_id})
        return Record.model_validate(doc) if doc else None

    async def records_of(self, case_id: str) -> list[Record]:
        """A case's records, oldest first."""
        found = self.documents.find({"case_id": case_id}).sort("uploaded_at", ASCENDING)
        return [Record.model_validate(d) async for d in found]

    async def count_records(self, case_id: str) -> int:
        """How many records a case holds."""
        return len([d async for d in self.documents.find({"case_id": case_id}, {"_id": 1})])

    async def put_record(self, record: Record, data: bytes) -> None:
        """Store a record: the bytes first, the metadata last, since the metadata is what
        makes it exist, so an interrupted upload leaves at most an orphan blob, replaced on
        the next attempt."""
        bucket = self.records()
        with contextlib.suppress(NoFile):
            await bucket.delete(record.id)
        await bucket.upload_from_stream_with_id(
            record.id, record.id, io.BytesIO(data), metadata={"case_id": record.case_id}
        )
        await self.documents.insert_one(record.to_doc())

    async def delete_record(self, record_id: str) -> bool:
        """Remove a record's metadata and bytes; False if there was none."""
        result = await self.documents.delete_one({"_id": record_id})
        if result.deleted_count == 0:
            return False
        with contextlib.suppress(NoFile):
            await self.records().delete(record_id)
        return True

    async def record_bytes(self, record_id: str) -> AsyncIterator[bytes] | None:
        """A record's bytes, chunk by chunk; None if they are gone."""
        try:
            grid_out = await self.records().open_download_stream(record_id)
        except NoFile:
            return None

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in grid_out:
                yield chunk

        return chunks()


async def init(db: AsyncDatabase[Document]) -> None:
    """Create the indexes the intake service relies on (one call each: the store wants that)."""
    store = Store(db)
    await store.cases.create_index("reference", unique=True)
    await store.cases.create_index([("patient_id", ASCENDING), ("_id", DESCENDING)])
    await store.cases.create_index([("partner_id", ASCENDING), ("_id", DESCENDING)])
    await store.cases.create_index([("reviewer_id", ASCENDING), ("_id", DESCENDING)])
    await store.cases.create_index([("status", ASCENDING), ("_id", DESCENDING)])
    await store.documents.create_index([("case_id", ASCENDING), ("uploaded_at", ASCENDING)])
