"""Review's repository: the stored documents as typed models, every MongoDB operator, indexes.

- `reviewers`: the directory, `_id` = reviewer id (= the `sub` of their token).
- `cases`: what review knows of a case (triage codes, its trace, its matching state and its
  place in the queue), `_id` = case id. A case withdrawn before its submission arrived is a
  tombstone: `_id`, `status: withdrawn`, and no triage.
- `assignments`: one document per assignment round, `_id` derived from the case id and the
  round (sorting by round), so a round is created once however often its cause is replayed.
  The assignment is the aggregate that carries the outbox of every event review publishes;
  its opinion versions live in it.

- `keys`: keyed index documents for the ways in that are not an `_id`: `matching` and
  `waiting` list the case ids in those states (the queue and recovery read them, then each
  case by `_id`); `due:<scope>:<day>` files every round's sort key by the day it is due, for
  all rounds (`all`) and per reviewer (`reviewer:<id>`), for the lists; `due:<scope>:months`
  lists the months that have such days and `due:<scope>:days:<month>` the days of one month
  (`ids`) with how many keys each was filed (`n`, a hint: how many buckets a page reads at
  once), so a page reads documents of a bounded size however long the history. (The versions
  before listed every day in one `due:<scope>:days`: start-up folds it into the months,
  `fold_due_days`, and the walk reads what is left of it.)
  They are written under the matching lock, added to before the state they point to is
  written (removed from after), and checked against what they point to when read.
- `settings`: the coordinators' rules, `_id` = their name (`second-reading`: the specialties and
  urgencies whose opinions a second specialist reads before release).
- `audit_trail`, `audit_heads`, `audit_checkpoints`: the access trail (avis.shared.audit), one
  hash chain per case of every read and write of its opinions and decline reasons by a person.

Every hot read goes by `_id` (FerretDB serves nothing else from an index). A reviewer's load
is the list of its open (assigned or accepted) assignment ids on the reviewer's own document,
`open_assignments`, read and written under the reviewer's lock: never a counter raced by
`$inc`, never a scan of the assignments. A case's rounds are read by their derived `_id`s.
Writers hold the aggregate's lock around every write (the store does not serialise them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, Field
from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from avis.review.models import (
    ACTIVE,
    Assignment,
    AssignmentStatus,
    CaseStatus,
    DeclineReason,
    FollowUp,
    FollowUpState,
    InformationRequest,
    Opinion,
    OpinionVersion,
    QueuedCase,
    Rationale,
    RequestState,
    Reviewer,
    ReviewerIn,
    SecondReading,
    SecondReadingComment,
    SecondReadingReason,
    SecondReadingRules,
    SecondReadingState,
    Translation,
    TranslationState,
    TranslationStep,
    TranslationTexts,
    TranslationWay,
    Translator,
    TranslatorIn,
)
from avis.review.rules import (
    ACTIONS,
    OPEN_TRANSLATION,
    CaseNeeds,
    ReviewerFit,
    TranslatorFit,
    assignment_id_for,
    due_day,
    due_days_enough,
    due_days_to_read,
    due_month,
    follow_up_report_seq,
    is_overdue,
    translation_overdue,
)
from avis.shared.access_log import TrailPage
from avis.shared.audit import AuditEntry, AuditRecord, AuditTrail
from avis.shared.clock import now
from avis.shared.envelope import Event
from avis.shared.events import Language, Specialty, Urgency
from avis.shared.mongo import AsText, Document, Stored, by_ids
from avis.shared.outbox import new_with_events, with_events
from avis.shared.sealing import Sealed

log = structlog.get_logger("avis.review.store")

WITHOUT_OUTBOX = {"outbox": 0, "outbox_pending": 0}
DUPLICATE_KEY = 11000  # the store's error code for an `_id` already taken
# What a list of assignments shows: no outbox, no opinion texts (a list shows the version),
# and for a reviewer's own list no matching rationale either (coordinators' alone).
LISTED = WITHOUT_OUTBOX | {"opinions": 0}
LISTED_FOR_REVIEWER = LISTED | {"rationale": 0}
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
    open_assignments: list[str] = Field(default_factory=list)
    # The work address (a `ProfessionalContact`), sealed under the service's keyring and
    # `rules.reviewer_contact_aad(id)`: no case's data, never in clear.
    contact: Sealed | None = None

    @property
    def load(self) -> int:
        """How many assignments the reviewer has assigned or accepted right now."""
        return len(self.open_assignments)

    @classmethod
    def new(cls, reviewer: ReviewerIn, at: datetime, contact: Sealed | None = None) -> ReviewerDoc:
        """The stored form of a new reviewer (its address only as `contact`, sealed)."""
        fields = reviewer.model_dump(exclude={"email"})
        return cls.model_validate(
            {**fields, "contact": contact, "created_at": at, "updated_at": at}
        )

    def same_as(self, reviewer: ReviewerIn) -> bool:
        """Whether `reviewer` repeats this one exactly (a replayed creation)."""
        mine = self.model_dump(
            mode="json", exclude={"created_at", "updated_at", "open_assignments", "contact"}
        )
        return mine == reviewer.model_dump(mode="json", exclude={"email"})

    def view(self) -> Reviewer:
        """The API view of this reviewer, with their load."""
        return Reviewer.model_validate({**self.model_dump(exclude={"contact"}), "load": self.load})

    def fit(self) -> ReviewerFit:
        """What matching needs to know of this reviewer, with their load."""
        return ReviewerFit(
            id=self.id,
            specialties=frozenset(s.value for s in self.specialties),
            languages=frozenset(lang.value for lang in self.languages),
            institution_code=self.institution_code,
            capacity=self.capacity,
            load=self.load,
            active=self.active,
        )


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
    # The patient accepted a specialist who does not read their language (through a
    # translator) when none who does is available.
    international_review: bool = False
    # Its clinical summary for the translator of an international review, as the submission
    # carried it: sealed under the case's key, bound to that event's id (`summary_event`).
    summary: Sealed | None = None
    summary_event: str | None = None
    submitted_at: datetime | None = None
    case_url: str = ""
    traceparent: str = ""
    queue_key: str | None = None
    received_at: datetime | None = None
    withdrawn_at: datetime | None = None
    waiting_since: datetime | None = None
    last_attempt: AsText[Rationale] | None = None
    assignment_id: str | None = None
    # The patient's pseudonymous subject (from the submission, or the claim of a case a partner
    # filed): who besides coordinators reads the case's access trail here.
    patient_id: str | None = None
    # The case's data key in the key service (a reference): its opinions are sealed under it.
    key_ref: str | None = None
    erased_at: datetime | None = None
    # The partner that filed the case (with the patient's consent to share): it may ask the
    # follow-up questions too.
    partner_id: str | None = None
    # When the case's first report version was issued: follow-up questions are asked within a
    # period from it.
    reported_at: datetime | None = None

    def triage(self) -> Triage:
        """The case's codes; only a tombstone lacks them, and a tombstone is never matched."""
        if None in (self.specialty, self.urgency, self.language, self.submitted_at):
            raise ValueError(f"case {self.id} has no triage (a withdrawal tombstone)")
        assert self.specialty and self.urgency and self.language and self.submitted_at
        return Triage(self.specialty, self.urgency, self.language, self.submitted_at)

    def needs(self, declined_by: list[str]) -> CaseNeeds:
        """What matching needs to know of this case (`declined_by`: who declined it)."""
        triage = self.triage()
        return CaseNeeds(
            specialty=triage.specialty.value,
            language=triage.language.value,
            physician_institution=self.physician_institution,
            declined_by=frozenset(declined_by),
            international_review=self.international_review,
        )

    def view(self, declined_by: list[str]) -> QueuedCase:
        """The API view of this case waiting in the queue (`declined_by`: who declined it)."""
        triage = self.triage()
        return QueuedCase(
            case_id=self.id,
            reference=self.reference,
            specialty=triage.specialty,
            urgency=triage.urgency,
            language=triage.language,
            physician_institution=self.physician_institution,
            submitted_at=triage.submitted_at,
            waiting_since=self.waiting_since,
            declined_by=declined_by,
            last_attempt=self.last_attempt,
            international_review=self.international_review,
        )


class Decline(BaseModel):
    """Why a reviewer declined: the published code and the free text kept here, sealed and
    bound to the assignment (`rules.decline_aad`)."""

    reason_code: DeclineReason
    sealed_reason: Sealed | None = None
    reason: str | None = None  # in clear: a decline stored before sealing


class OpinionEntry(BaseModel):
    """One version of an assignment's opinion: sealed, bound to the assignment and version
    (`rules.opinion_aad`), with a keyed digest of its content."""

    version: int
    digest: str
    completed_at: datetime
    event_id: str
    sealed: Sealed | None = None
    opinion: dict[str, Any] | None = None  # in clear: a version stored before sealing

    def view(self, assignment: AssignmentDoc, opinion: Opinion) -> OpinionVersion:
        """The API view of this version of `assignment`'s opinion, opened (`opinion`)."""
        return OpinionVersion(
            assignment_id=assignment.id,
            case_id=assignment.case_id,
            reviewer_id=assignment.reviewer_id,
            version=self.version,
            completed_at=self.completed_at,
            opinion=opinion,
        )


class RequestEntry(BaseModel):
    """A request for more information: its question sealed under the case's key, bound to the
    assignment and the request (`rules.information_aad`), and what became of it."""

    id: str
    requested_at: datetime
    expires_at: datetime
    sealed: Sealed
    answered_at: datetime | None = None
    expired_at: datetime | None = None
    paused_seconds: float | None = None

    @property
    def state(self) -> RequestState:
        """Open, answered or expired."""
        if self.answered_at is not None:
            return RequestState.ANSWERED
        return RequestState.OPEN if self.expired_at is None else RequestState.EXPIRED

    def view(self, assignment: AssignmentDoc) -> InformationRequest:
        """The API view of this request (never its question: intake shows it with the case)."""
        return InformationRequest(
            id=self.id,
            assignment_id=assignment.id,
            case_id=assignment.case_id,
            reviewer_id=assignment.reviewer_id,
            state=self.state,
            requested_at=self.requested_at,
            expires_at=self.expires_at,
            answered_at=self.answered_at,
            expired_at=self.expired_at,
            paused_seconds=self.paused_seconds,
        )


class FollowUpEntry(BaseModel):
    """A follow-up question after the report: the question and the answer sealed under the
    case's key, each bound to the follow-up (`rules.follow_up_aad`)."""

    id: str
    number: int
    asked_at: datetime
    due_at: datetime
    question: Sealed
    answered_at: datetime | None = None
    answer: Sealed | None = None
    seq: int = 0  # the case's sequence number of its asking (0: asked before it was kept)
    # Keyed digests (`rules.follow_up_request`) of the asker's Idempotency-Key and of the text.
    request: str | None = None
    fingerprint: str | None = None

    @property
    def state(self) -> FollowUpState:
        """Open, or answered."""
        return FollowUpState.OPEN if self.answered_at is None else FollowUpState.ANSWERED

    def view(
        self,
        assignment: AssignmentDoc,
        *,
        at: datetime,
        question: str | None = None,
        answer: str | None = None,
    ) -> FollowUp:
        """The API view of this follow-up (its texts, opened, only when given)."""
        return FollowUp(
            id=self.id,
            case_id=assignment.case_id,
            assignment_id=assignment.id,
            reviewer_id=assignment.reviewer_id,
            number=self.number,
            state=self.state,
            asked_at=self.asked_at,
            due_at=self.due_at,
            overdue=self.answered_at is None and self.due_at < at,
            answered_at=self.answered_at,
            question=question,
            answer=answer,
        )


class CommentEntry(BaseModel):
    """Comments of a second reader on a version of the opinion: sealed under the case's key,
    bound to the assignment and their number (`rules.comments_aad`)."""

    number: int
    version: int
    commented_at: datetime
    sealed: Sealed
    answered_by_version: int | None = None

    def view(self, text: str | None) -> SecondReadingComment:
        """The API view of these comments (`text`: opened, or None)."""
        return SecondReadingComment(
            number=self.number,
            version=self.version,
            commented_at=self.commented_at,
            text=text,
            answered_by_version=self.answered_by_version,
        )


class ReadingEntry(BaseModel):
    """The second reading of an assignment's opinion, kept on the assignment (whose outbox
    carries its events): who reads, which version, and the comments that went back."""

    reason: SecondReadingReason
    state: SecondReadingState
    reviewer_id: str | None = None
    rationale: AsText[Rationale] | None = None  # as a round's (docs/store-contract.md)
    requested_at: datetime
    version: int
    comments: list[CommentEntry] = Field(default_factory=list)
    agreed_at: datetime | None = None
    display_name: str | None = None  # the second reader's, for the released opinion

    def view(
        self,
        assignment: AssignmentDoc,
        *,
        coordinator: bool,
        texts: dict[int, str | None] | None = None,
        opinion: Opinion | None = None,
    ) -> SecondReading:
        """The API view of this reading (`texts`: the comments opened, by number)."""
        return SecondReading(
            assignment_id=assignment.id,
            case_id=assignment.case_id,
            reference=assignment.reference,
            specialty=assignment.specialty,
            urgency=assignment.urgency,
            first_reader_id=assignment.reviewer_id,
            second_reader_id=self.reviewer_id,
            reason=self.reason,
            state=self.state,
            version=self.version,
            requested_at=self.requested_at,
            agreed_at=self.agreed_at,
            comments=[c.view((texts or {}).get(c.number)) for c in self.comments],
            rationale=self.rationale if coordinator else None,
            opinion=opinion,
        )


class TranslationEntry(BaseModel):
    """A translation of an international review, kept on its assignment (whose outbox carries
    its events); its text sealed under the case's key (`rules.translation_aad(id)`)."""

    id: str
    way: TranslationWay
    state: TranslationState
    from_language: Language
    to_language: Language
    translator_id: str | None = None
    translator_display_name: str | None = None
    queued_at: datetime
    due_at: datetime
    taken_at: datetime | None = None
    done_at: datetime | None = None
    version: int | None = None  # to the patient: the opinion version it translates
    sealed: Sealed | None = None

    def view(
        self,
        assignment: AssignmentDoc,
        source: TranslationTexts | None = None,
        translated: TranslationTexts | None = None,
        *,
        at: datetime,
    ) -> Translation:
        """The API view of this translation as of `at` (its texts: opened by the caller, when
        shown)."""
        return Translation(
            id=self.id,
            assignment_id=assignment.id,
            case_id=assignment.case_id,
            reference=assignment.reference,
            way=self.way,
            state=self.state,
            from_language=self.from_language,
            to_language=self.to_language,
            translator_id=self.translator_id,
            translator_display_name=self.translator_display_name,
            queued_at=self.queued_at,
            due_at=self.due_at,
            taken_at=self.taken_at,
            done_at=self.done_at,
            source=source,
            translated=translated,
            overdue=translation_overdue(self.state, self.due_at, at),
        )

    def step(self) -> TranslationStep:
        """Where this translation is, as its round shows it (never its texts)."""
        return TranslationStep(
            id=self.id,
            way=self.way,
            state=self.state,
            from_language=self.from_language,
            to_language=self.to_language,
        )


class TranslatorDoc(Stored):
    """A translator of the directory: the languages they translate between, their capacity,
    and the translations counted in their load."""

    id: str = Field(alias="_id")
    display_name: str
    languages: list[Language]
    capacity: int
    active: bool
    open_translations: list[str] = Field(default_factory=list)
    contact: Sealed | None = None  # as a reviewer's (contacts.py)
    updated_at: datetime

    def fit(self) -> TranslatorFit:
        """What choosing a translator needs to know of this one, with their load."""
        return TranslatorFit(
            id=self.id,
            languages=frozenset(lang.value for lang in self.languages),
            capacity=self.capacity,
            load=len(self.open_translations),
            active=self.active,
        )

    def view(self) -> Translator:
        """The API view of this translator."""
        return Translator(
            id=self.id,
            display_name=self.display_name,
            languages=self.languages,
            capacity=self.capacity,
            active=self.active,
            load=len(self.open_translations),
        )


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
    rationale: AsText[Rationale] | None = None
    opinions: list[OpinionEntry] = Field(default_factory=list)
    accepted_at: datetime | None = None
    declined_at: datetime | None = None
    decline: Decline | None = None
    completed_at: datetime | None = None
    corrected_at: datetime | None = None
    cancelled_at: datetime | None = None
    opinion_version: int | None = None
    # The case's sequence number of the last event this round published (`rules.next_seq`);
    # 0: a round written before sequences.
    seq: int = 0
    # The reviewer does not read the patient's language: an international review the patient
    # accepted, through a translator both ways.
    international: bool = False
    # Requests for more information, oldest first; while one is open the SLA clock stands
    # since `paused_since`.
    requests: list[RequestEntry] = Field(default_factory=list)
    paused_since: datetime | None = None
    # The second reading of its opinion, if one is asked for.
    second_reading: ReadingEntry | None = None
    # Follow-up questions after the report, oldest first (MAX_FOLLOW_UPS at most).
    follow_ups: list[FollowUpEntry] = Field(default_factory=list)
    # International review: its translations, to the specialist first, then back.
    translations: list[TranslationEntry] = Field(default_factory=list)

    def translation(self, way: TranslationWay) -> TranslationEntry | None:
        """The round's translation one way, if it has one."""
        return next((t for t in self.translations if t.way is way), None)

    def report_seq(self, seq: int) -> int:
        """The sequence number the report version of this round's opinion published at `seq`
        goes out with: below the earliest of its follow-up questions still open, so that a
        correction issued meanwhile keeps the case in review (`rules.follow_up_report_seq`)."""
        return follow_up_report_seq(seq, (f.seq for f in self.follow_ups if f.answered_at is None))

    def overdue(self, at: datetime) -> bool:
        """Past its due date at `at` and not answered, its clock standing while a request for
        more information is open (`rules.is_overdue`)."""
        return is_overdue(self.status, self.due_at, at, self.paused_since)

    @property
    def open_request(self) -> RequestEntry | None:
        """The request for more information open now, if one is."""
        return next((r for r in self.requests if r.state is RequestState.OPEN), None)

    def view(self, *, at: datetime, coordinator: bool, reason: str | None = None) -> Assignment:
        """The API view of this round as of `at`; the rationale and the free-text reason of a
        decline (opened: `reason`) for coordinators only."""
        decline = self.decline
        return Assignment(
            id=self.id,
            case_id=self.case_id,
            reference=self.reference,
            round=self.round,
            reviewer_id=self.reviewer_id,
            status=self.status,
            specialty=self.specialty,
            urgency=self.urgency,
            language=self.language,
            assigned_at=self.assigned_at,
            due_at=self.due_at,
            overdue=self.overdue(at),
            accepted_at=self.accepted_at,
            declined_at=self.declined_at,
            decline_reason_code=decline.reason_code if decline else None,
            decline_reason=reason if decline and coordinator else None,
            completed_at=self.completed_at,
            cancelled_at=self.cancelled_at,
            opinion_version=self.opinion_version,
            case_url=self.case_url,
            rationale=self.rationale if coordinator else None,
            paused_since=self.paused_since,
            information_requests=[r.view(self) for r in self.requests],
            second_reading=self.second_reading.state if self.second_reading else None,
            translations=[t.step() for t in self.translations],
        )


# --- the repository -------------------------------------------------------------------------


class Store:
    """Review's collections and every operation on them."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.reviewers = db["reviewers"]
        self.cases = db["cases"]
        self.assignments = db["assignments"]
        self.keys = db["keys"]
        self.trail = AuditTrail(db)
        self.information = InformationStore(self)
        self.readings = ReadingStore(self)
        self.follow_ups = FollowUpStore(self)
        self.translations = TranslationStore(self)
        self.batch = BatchStore(self)

    # the access trail

    async def audit(
        self, case_id: str, record: AuditRecord, at: datetime, fold: timedelta | None = None
    ) -> AuditEntry | None:
        """Append to a case's access trail (None: folded into the last entry, see
        `AuditTrail.append`); the caller holds the trail's lock."""
        return await self.trail.append(case_id, record, at, fold=fold)

    async def trail_page(self, case_id: str, after: int, limit: int) -> TrailPage:
        """Up to `limit` entries of a case's access trail after position `after`."""
        entries, last = await self.trail.page(case_id, after=after, limit=limit)
        return TrailPage(case_id, entries, last, "review", ACTIONS)

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
        """How many assignments each reviewer has assigned or accepted right now (read from
        each reviewer's own document)."""
        found = {rid: await self.reviewer(rid) for rid in dict.fromkeys(reviewer_ids)}
        return {rid: doc.load if doc else 0 for rid, doc in found.items()}

    async def load(self, reviewer_id: str) -> int:
        """How many assignments one reviewer has assigned or accepted right now."""
        return (await self.loads([reviewer_id]))[reviewer_id]

    async def add_open(self, reviewer_id: str, assignment_id: str) -> None:
        """Count an assignment in its reviewer's load (once); the caller holds the reviewer's
        lock."""
        await self.reviewers.update_one(
            {"_id": reviewer_id}, {"$addToSet": {"open_assignments": assignment_id}}
        )

    async def remove_open(self, reviewer_id: str, assignment_id: str) -> None:
        """Stop counting an assignment in its reviewer's load; the caller holds the reviewer's
        lock."""
        await self.reviewers.update_one(
            {"_id": reviewer_id}, {"$pull": {"open_assignments": assignment_id}}
        )

    async def all_reviewers(self) -> list[ReviewerDoc]:
        """The whole directory (its size is the number of reviewers, not of cases)."""
        return [ReviewerDoc.model_validate(d) async for d in self.reviewers.find({})]

    async def reseal_contact(
        self, directory: str, person_id: str, was: Sealed, sealed: Sealed
    ) -> bool:
        """Keep a reviewer's or translator's address (`directory`: the collection) sealed
        again, only if it is still the one read (a change meanwhile wins)."""
        found = await self.db[directory].update_one(
            {"_id": person_id, "contact.ct": was.ct},
            {"$set": {"contact": sealed.model_dump(mode="json")}},
        )
        return found.modified_count == 1

    # keyed index documents

    async def key_ids(self, name: str) -> list[str]:
        """The ids a keyed index document lists."""
        doc = await self.keys.find_one({"_id": name})
        return list(doc["ids"]) if doc else []

    async def key_ids_of(self, names: Sequence[str]) -> list[list[str]]:
        """The ids each of several keyed index documents lists, read in one request by `_id`."""
        docs = await by_ids(self.keys, names, {"ids": 1})
        return [list(doc["ids"]) if doc else [] for doc in docs]

    async def key_counts(self, names: Sequence[str]) -> list[tuple[list[str], dict[str, int]]]:
        """The ids each of several keyed index documents lists, and its counts (`n`, by id;
        the due walk's days), read in one request by `_id`."""
        docs = await by_ids(self.keys, names, {"ids": 1, "n": 1})
        return [(list(d.get("ids", [])), dict(d.get("n", {}))) if d else ([], {}) for d in docs]

    async def key_add(self, name: str, item: str) -> None:
        """Add an id to a keyed index document (once), in one write; the caller holds the
        matching lock."""
        await self.keys.update_one({"_id": name}, _add_to(item), upsert=True)

    async def key_remove(self, name: str, item: str) -> None:
        """Remove an id from a keyed index document; the caller holds the matching lock."""
        await self.keys.update_one({"_id": name}, {"$pull": {"ids": item}})

    # cases

    async def case(self, case_id: str) -> CaseDoc | None:
        """What review knows of one case."""
        doc = await self.cases.find_one({"_id": case_id})
        return CaseDoc.model_validate(doc) if doc else None

    async def insert_case(self, case: CaseDoc) -> bool:
        """Write a case review has not seen; False if it is already there (or a tombstone)."""
        if case.status == CaseStatus.MATCHING:
            await self.key_add(MATCHING_KEY, case.id)
        try:
            await self.cases.insert_one(case.to_doc())
        except DuplicateKeyError:
            stored = await self.case(case.id)
            if case.status == CaseStatus.MATCHING and (
                stored is None or stored.status != case.status
            ):
                await self.key_remove(MATCHING_KEY, case.id)  # a replay: not matching after all
            return False
        return True

    async def set_patient(self, case_id: str, patient_id: str) -> None:
        """Record the patient who claimed a case a partner filed."""
        await self.cases.update_one({"_id": case_id}, {"$set": {"patient_id": patient_id}})

    async def set_case_erased(self, case_id: str, at: datetime) -> None:
        """Mark a case erased (its key destroyed)."""
        await self.cases.update_one({"_id": case_id}, {"$set": {"erased_at": at}})

    async def set_case_key(self, case_id: str, key_ref: str) -> None:
        """Record the case's key (its values are sealed under it)."""
        await self.cases.update_one({"_id": case_id}, {"$set": {"key_ref": key_ref}})

    async def seal_round(
        self, assignment_id: str, opinions: list[OpinionEntry], decline: Decline | None
    ) -> None:
        """Keep a round's opinion versions and decline as given (sealed again; its writer holds
        its lock)."""
        fields: dict[str, Any] = {"opinions": [o.model_dump() for o in opinions]}
        if decline is not None:
            fields["decline"] = decline.model_dump()
        await self.assignments.update_one({"_id": assignment_id}, {"$set": fields})

    async def set_case_withdrawn(self, case_id: str, at: datetime) -> None:
        """Mark a known case withdrawn."""
        await self.cases.update_one(
            {"_id": case_id}, {"$set": {"status": CaseStatus.WITHDRAWN.value, "withdrawn_at": at}}
        )
        await self.keys.bulk_write(_pulled_from((WAITING_KEY, MATCHING_KEY), case_id))

    async def set_case_matching(self, case_id: str) -> None:
        """Mark a case as due for a matching decision."""
        await self.key_add(MATCHING_KEY, case_id)
        await self.cases.update_one(
            {"_id": case_id}, {"$set": {"status": CaseStatus.MATCHING.value}}
        )

    async def set_case_waiting(
        self, case_id: str, *, since: datetime, last_attempt: Rationale
    ) -> None:
        """Put a case in the queue, with the matching attempt that found nobody."""
        await self.key_add(WAITING_KEY, case_id)
        await self.cases.update_one(
            {"_id": case_id},
            {
                "$set": {
                    "status": CaseStatus.WAITING.value,
                    "waiting_since": since,
                    "last_attempt": last_attempt.model_dump_json(),
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
        await self.keys.bulk_write(_pulled_from((WAITING_KEY, MATCHING_KEY), case_id))

    async def cases_in(self, status: CaseStatus) -> list[CaseDoc]:
        """Every case in a status (matching or waiting), in queue order: the ids its keyed
        index document lists, each read by `_id` and checked."""
        name = WAITING_KEY if status == CaseStatus.WAITING else MATCHING_KEY
        return await _cases_listed(self, await self.key_ids(name), status)

    async def queue_and_readings(self) -> tuple[list[CaseDoc], list[str]]:
        """The waiting cases, in queue order, and the assignments whose second reading waits
        for a reader (`ReadingStore.waiting_ids`): both keyed index documents in one request."""
        waiting, readings = await self.key_ids_of([WAITING_KEY, UNMATCHED_READINGS_KEY])
        return await _cases_listed(self, waiting, CaseStatus.WAITING), readings

    async def queue_page(
        self,
        *,
        specialty: Specialty | None,
        urgency: Urgency | None,
        after: str | None,
        limit: int,
    ) -> list[CaseDoc]:
        """Up to `limit` waiting cases matching the filters, in queue order, after `after`."""
        waiting = [
            c
            for c in await self.cases_in(CaseStatus.WAITING)
            if (specialty is None or c.specialty == specialty)
            and (urgency is None or c.urgency == urgency)
            and (after is None or (c.queue_key or "") > after)
        ]
        return waiting[:limit]

    # assignments

    async def assignment(
        self, assignment_id: str, projection: dict[str, int] = WITHOUT_OUTBOX
    ) -> AssignmentDoc | None:
        """One assignment, without its outbox (and without what `projection` leaves out)."""
        doc = await self.assignments.find_one({"_id": assignment_id}, projection)
        return AssignmentDoc.model_validate(doc) if doc else None

    async def listed(
        self, assignment_ids: Sequence[str], projection: dict[str, int] = LISTED
    ) -> list[AssignmentDoc | None]:
        """Assignments as a list shows them, read by `_id` in one request (None: not there)."""
        docs = await by_ids(self.assignments, assignment_ids, projection)
        return [None if d is None else AssignmentDoc.model_validate(d) for d in docs]

    async def assignments_of(self, case_id: str, known_round: int = 0) -> list[AssignmentDoc]:
        """Every round of a case, first round first: read by their derived `_id`s, up to the
        case's round and the next, in one request; on while the last one read exists (a round
        written by an attempt that stopped before updating its case)."""
        rounds: list[AssignmentDoc] = []
        first, last = 1, known_round + 1
        while True:
            ids = [assignment_id_for(case_id, n) for n in range(first, last + 1)]
            docs = await by_ids(self.assignments, ids, WITHOUT_OUTBOX)
            rounds += [AssignmentDoc.model_validate(d) for d in docs if d is not None]
            if docs[-1] is None:
                return rounds
            first, last = last + 1, last + 1

    async def declined_by(self, cases: list[CaseDoc]) -> dict[str, list[str]]:
        """Who declined each of these cases, first round first."""
        found = await asyncio.gather(*(self.assignments_of(c.id, c.round) for c in cases))
        return {
            case.id: [r.reviewer_id for r in rounds if r.status == AssignmentStatus.DECLINED]
            for case, rounds in zip(cases, found, strict=True)
        }

    async def assignments_page(
        self,
        *,
        reviewer_id: str | None,
        statuses: frozenset[AssignmentStatus],
        case_id: str | None,
        overdue_at: tuple[bool, datetime] | None,
        after: str | None,
        limit: int,
        projection: dict[str, int] = LISTED,
    ) -> tuple[list[AssignmentDoc], str | None]:
        """Up to `limit` assignments matching the filters (`statuses`: in any of them; empty:
        every status), soonest due first, after `after`, and where to go on when the page
        stopped short of `limit` at its budget (else None).

        `overdue_at` is `(True, at)` for those past due at `at` and not answered, `(False, at)`
        for the others. Three ways in, all by `_id`: a case's rounds; the open assignments
        the reviewers' documents list (what is assigned, accepted or overdue); otherwise the
        day buckets of due dates (`due:<scope>:<day>`), walked from the soonest day. The
        assignments are read together (a batch at a time from the buckets), as `projection`
        shows them.
        """

        def keep(doc: AssignmentDoc) -> bool:
            if reviewer_id is not None and doc.reviewer_id != reviewer_id:
                return False
            if statuses and doc.status not in statuses:
                return False
            if overdue_at is not None:
                overdue, at = overdue_at
                if doc.overdue(at) != overdue:
                    return False
            return after is None or doc.sort_key > after

        if case_id is not None:
            case = await self.case(case_id)
            rounds = await self.assignments_of(case_id, case.round if case else 0)
            return sorted(filter(keep, rounds), key=lambda d: d.sort_key)[:limit], None
        if (overdue_at is not None and overdue_at[0]) or (
            statuses and all(s.value in _ACTIVE for s in statuses)
        ):
            if reviewer_id is not None:
                one = await self.reviewer(reviewer_id)
                reviewers = [one] if one is not None else []
            else:
                reviewers = await self.all_reviewers()
            ids = [a for r in reviewers for a in r.open_assignments]
            found = [a for a in await self.listed(ids, projection) if a is not None]
            return sorted(filter(keep, found), key=lambda d: d.sort_key)[:limit], None
        due = _DueWalk(self, due_scope(reviewer_id), keep, projection)
        return await due.page(after, limit)

    async def file_due(self, *assignments: AssignmentDoc) -> None:
        """File new rounds in the day buckets of their due dates (all, and their reviewer's),
        before the rounds are written, and their days and months in their lists (each added
        once, never removed: two writers lose nothing), in one request; the caller holds the
        matching lock (`due_filing`)."""
        await self.keys.bulk_write(due_filing(assignments))

    async def open_assignments(self, reviewer: ReviewerDoc) -> list[AssignmentDoc]:
        """A reviewer's open assignments as its document lists them, each read by `_id`."""
        found = await self.listed(reviewer.open_assignments)
        return [a for a in found if a is not None]

    async def insert_assignment(self, assignment: AssignmentDoc, events: Sequence[Event]) -> None:
        """Write a new round with its events; a round already there (written by an attempt
        that stopped before updating its case) is kept as it is."""
        with contextlib.suppress(DuplicateKeyError):
            await self.assignments.insert_one(new_with_events(assignment.to_doc(), events))

    async def accept(
        self, assignment_id: str, *, at: datetime, seq: int, events: Sequence[Event]
    ) -> None:
        """Record an acceptance and its events (the last of sequence `seq`) in one write."""
        update = {
            "$set": {"status": AssignmentStatus.ACCEPTED.value, "accepted_at": at, "seq": seq}
        }
        await self.assignments.update_one({"_id": assignment_id}, with_events(update, events))

    async def decline(
        self,
        assignment_id: str,
        *,
        at: datetime,
        decline: Decline,
        seq: int,
        events: Sequence[Event],
    ) -> None:
        """Record a decline and its events (the last of sequence `seq`) in one write."""
        update = {
            "$set": {
                "status": AssignmentStatus.DECLINED.value,
                "declined_at": at,
                "decline": decline.model_dump(mode="json"),
                "seq": seq,
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
        self,
        assignment_id: str,
        *,
        entry: OpinionEntry,
        seq: int,
        events: Sequence[Event],
        reading: ReadingEntry | None = None,
        translations: list[TranslationEntry] | None = None,
    ) -> None:
        """Record an opinion version (the first completes the assignment), the second reading
        it goes to (if it does), the round's translations (the opinion's translation back
        queued) and its events (the last of sequence `seq`)."""
        changes: dict[str, Any] = {
            "status": AssignmentStatus.COMPLETED.value,
            "opinion_version": entry.version,
            "completed_at" if entry.version == 1 else "corrected_at": entry.completed_at,
            "seq": seq,
        }
        if reading is not None:
            changes["second_reading"] = reading.model_dump()
        if translations is not None:
            changes["translations"] = [t.model_dump() for t in translations]
        update = {"$set": changes, "$push": {"opinions": entry.model_dump()}}
        await self.assignments.update_one({"_id": assignment_id}, with_events(update, events))


class BatchStore:
    """The writes of a batch of matching decisions, each one request for every case of the
    batch (review's `Store` holds it as `batch`; the matcher's `decide_submitted`)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def active_reviewers(self) -> list[ReviewerDoc]:
        """Every active reviewer, by id, in one request: what a batch of matching decisions
        reads once for all its specialties (the filter reads the whole collection anyway on
        the local store, whose only index is `_id`)."""
        cursor = self.store.reviewers.find({"active": True})
        return [ReviewerDoc.model_validate(d) for d in await cursor.sort("_id", 1).to_list(None)]

    async def add_open_many(self, counted: Sequence[tuple[str, str]]) -> None:
        """Count each assignment in its reviewer's load (once), every reviewer in one request
        (`counted`: reviewer id, assignment id); the caller holds the reviewers' locks."""
        by_reviewer: dict[str, list[str]] = {}
        for reviewer_id, assignment_id in counted:
            by_reviewer.setdefault(reviewer_id, []).append(assignment_id)
        if by_reviewer:
            await self.store.reviewers.bulk_write(
                [
                    UpdateOne({"_id": rid}, {"$addToSet": {"open_assignments": {"$each": ids}}})
                    for rid, ids in by_reviewer.items()
                ]
            )

    async def insert_cases(self, cases: Sequence[CaseDoc]) -> list[bool]:
        """Write several cases review has not seen, in matching, in one request (and list them
        in matching first, in one more): for each, whether it was written (False: already
        there, or a tombstone; then it is not left listed unless it is still in matching)."""
        if not cases:
            return []
        await self.store.keys.update_one(
            {"_id": MATCHING_KEY},
            {"$addToSet": {"ids": {"$each": [c.id for c in cases]}}},
            upsert=True,
        )
        written = [True] * len(cases)
        try:
            await self.store.cases.insert_many([c.to_doc() for c in cases], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors) or not errors:
                raise
            for error in errors:
                written[int(error["index"])] = False
        seen = [c.id for c, new in zip(cases, written, strict=True) if not new]
        if seen:
            stored = await by_ids(self.store.cases, seen, {"status": 1})
            replays = [
                case_id
                for case_id, doc in zip(seen, stored, strict=True)
                if doc is None or doc.get("status") != CaseStatus.MATCHING.value
            ]
            if replays:  # replays: not matching after all
                await self.store.keys.update_one(
                    {"_id": MATCHING_KEY}, {"$pullAll": {"ids": replays}}
                )
        return written

    async def set_cases_assigned(self, assigned: Sequence[tuple[str, str, int]]) -> None:
        """Record several cases' first assignment (case id, assignment id, round), out of the
        queue data, in one request, and drop them from the matching and waiting lists in one
        more."""
        if not assigned:
            return
        await self.store.cases.bulk_write(
            [
                UpdateOne(
                    {"_id": case_id},
                    {
                        "$set": {
                            "status": CaseStatus.ASSIGNED.value,
                            "assignment_id": assignment_id,
                            "round": round_,
                        },
                        "$unset": {"waiting_since": "", "last_attempt": ""},
                    },
                )
                for case_id, assignment_id, round_ in assigned
            ]
        )
        ids = [case_id for case_id, _, _ in assigned]
        await self.store.keys.bulk_write(
            [
                UpdateOne({"_id": name}, {"$pullAll": {"ids": ids}})
                for name in (WAITING_KEY, MATCHING_KEY)
            ]
        )

    async def insert_assignments(
        self, written: Sequence[tuple[AssignmentDoc, Sequence[Event]]]
    ) -> None:
        """Write several new rounds, each with its events, in one request; a round already
        there (written by an attempt that stopped before updating its case) is kept as it is."""
        if not written:
            return
        try:
            await self.store.assignments.insert_many(
                [new_with_events(a.to_doc(), events) for a, events in written], ordered=False
            )
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise


class ReadingStore:
    """The coordinators' rules of the second reading and the writes of a reading on its
    assignment (review's `Store` holds it as `readings`)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.settings = store.db["settings"]

    async def rules(self) -> SecondReadingRules:
        """The coordinators' rules of the second reading (none set: none)."""
        doc = await self.settings.find_one({"_id": "second-reading"})
        return SecondReadingRules.model_validate(doc or {})

    async def set_rules(self, rules_: SecondReadingRules) -> None:
        """Replace the rules of the second reading."""
        await self.settings.replace_one(
            {"_id": "second-reading"}, rules_.model_dump(mode="json"), upsert=True
        )

    async def write(
        self,
        assignment_id: str,
        *,
        reading: ReadingEntry,
        seq: int,
        events: Sequence[Event],
        translations: list[TranslationEntry] | None = None,
    ) -> None:
        """Record the second reading as it is now and its events (the last of sequence
        `seq`) in one write, with the round's translations when the agreement queued the
        opinion's translation back."""
        changes: dict[str, Any] = {"second_reading": reading.model_dump(), "seq": seq}
        if translations is not None:
            changes["translations"] = [t.model_dump() for t in translations]
        update = {"$set": changes}
        await self.store.assignments.update_one({"_id": assignment_id}, with_events(update, events))

    async def waiting(self, assignment_id: str) -> None:
        """File a reading nobody fitted among those offered again when capacity frees."""
        await self.store.key_add(UNMATCHED_READINGS_KEY, assignment_id)

    async def waiting_ids(self) -> list[str]:
        """The assignments whose reading was filed as waiting for a second reader."""
        return await self.store.key_ids(UNMATCHED_READINGS_KEY)

    async def matched(self, assignment_id: str) -> None:
        """Take a reading off the waiting ones (it found a reader, or needs none any more)."""
        await self.store.key_remove(UNMATCHED_READINGS_KEY, assignment_id)

    async def close(self, assignment_id: str, *, reading: ReadingEntry) -> None:
        """Record the reading closed (its case withdrawn): no event, the withdrawal said it."""
        update = {"$set": {"second_reading": reading.model_dump()}}
        await self.store.assignments.update_one({"_id": assignment_id}, update)


class InformationStore:
    """The writes of requests for more information on an assignment round (review's `Store`
    holds it as `information`)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def ask(
        self,
        assignment_id: str,
        *,
        entry: RequestEntry,
        seq: int,
        events: Sequence[Event],
    ) -> None:
        """Record a request for more information, the clock stopped at its time, and its
        events (the last of sequence `seq`), in one write."""
        update = {
            "$set": {"paused_since": entry.requested_at, "seq": seq},
            "$push": {"requests": entry.model_dump()},
        }
        await self.store.assignments.update_one({"_id": assignment_id}, with_events(update, events))

    async def resume(
        self,
        assignment: AssignmentDoc,
        *,
        requests: list[RequestEntry],
        seq: int,
        events: Sequence[Event],
    ) -> None:
        """The clock resumes: the moved due date (`assignment`'s, with its sort key), the
        requests as they are now, and the events (the last of sequence `seq`), in one write."""
        update = {
            "$set": {
                "due_at": assignment.due_at,
                "sort_key": assignment.sort_key,
                "requests": [r.model_dump() for r in requests],
                "seq": seq,
            },
            "$unset": {"paused_since": ""},
        }
        await self.store.assignments.update_one({"_id": assignment.id}, with_events(update, events))

    async def unfile_due(self, assignment: AssignmentDoc) -> None:
        """Take a round's former sort key out of its day buckets, after its due date moved and
        the round was written with the new one (a stop before: the entry is skipped on read)."""
        day = due_day(assignment.sort_key)
        for scope in (due_scope(None), due_scope(assignment.reviewer_id)):
            await self.store.key_remove(f"due:{scope}:{day}", assignment.sort_key)
            # The day stays listed (an emptied day costs the walk nothing); its count drops.
            month = f"due:{scope}:days:{due_month(day)}"
            await self.store.keys.update_one({"_id": month}, {"$inc": {f"n.{day}": -1}})


class FollowUpStore:
    """The writes of follow-up questions on an assignment round, and the keyed index of the open
    ones (the specialists' queue of follow-ups reads it, then each round by `_id`); review's
    `Store` holds it as `follow_ups`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def set_reported(self, case_id: str, at: datetime) -> None:
        """Record when the case's first report version was issued (a later one changes
        nothing: the follow-up period runs from the first)."""
        await self.store.cases.update_one(
            {"_id": case_id, "reported_at": {"$exists": False}}, {"$set": {"reported_at": at}}
        )

    async def ask(
        self, assignment_id: str, *, entry: FollowUpEntry, seq: int, events: Sequence[Event]
    ) -> None:
        """Record a follow-up question and its events (the last of sequence `seq`) in one
        write; it is filed among the open ones before (a stop between: skipped on read)."""
        await self.store.key_add(OPEN_FOLLOW_UPS_KEY, entry.id)
        update = {"$set": {"seq": seq}, "$push": {"follow_ups": entry.model_dump()}}
        await self.store.assignments.update_one({"_id": assignment_id}, with_events(update, events))

    async def answer(
        self,
        assignment_id: str,
        *,
        follow_ups: list[FollowUpEntry],
        answered: str,
        seq: int,
        events: Sequence[Event],
    ) -> None:
        """Record the answer (the follow-ups as they are now) and its events (the last of
        sequence `seq`) in one write, then take the question off the open ones."""
        update = {"$set": {"follow_ups": [f.model_dump() for f in follow_ups], "seq": seq}}
        await self.store.assignments.update_one({"_id": assignment_id}, with_events(update, events))
        await self.store.key_remove(OPEN_FOLLOW_UPS_KEY, answered)

    async def open_ids(self) -> list[str]:
        """The ids of the follow-up questions filed as open."""
        return await self.store.key_ids(OPEN_FOLLOW_UPS_KEY)


class TranslationStore:
    """The translators' directory, the writes of translations on their assignment, and the keyed
    index of the open ones (the translators' queue reads it, then each round by `_id`); review's
    `Store` holds it as `translations`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.translators = store.db["translators"]

    async def translator(self, translator_id: str) -> TranslatorDoc | None:
        """One translator by id."""
        doc = await self.translators.find_one({"_id": translator_id})
        return TranslatorDoc.model_validate(doc) if doc else None

    async def all_translators(self) -> list[TranslatorDoc]:
        """The whole translators' directory (its size is the number of translators)."""
        return [TranslatorDoc.model_validate(d) async for d in self.translators.find({})]

    async def translators_page(
        self, *, language: Language | None, after: str | None, limit: int
    ) -> list[TranslatorDoc]:
        """Up to `limit` translators (of `language`, when given), by id, after the id `after`:
        the directory, read as the reviewers' is (its size is the number of translators)."""
        query: dict[str, Any] = {}
        if language is not None:
            query["languages"] = language.value
        if after is not None:
            query["_id"] = {"$gt": after}
        found = await self.translators.find(query).sort("_id", ASCENDING).to_list(limit)
        return [TranslatorDoc.model_validate(d) for d in found]

    async def put_translator(self, doc: TranslatorDoc) -> None:
        """Add or replace a translator, keeping the translations counted in their load."""
        fields = doc.to_doc()
        fields.pop("open_translations", None)
        fields.pop("_id", None)
        await self.translators.update_one({"_id": doc.id}, {"$set": fields}, upsert=True)

    async def count(self, translator_id: str, translation_id: str) -> None:
        """Count a translation in its translator's load (once)."""
        await self.translators.update_one(
            {"_id": translator_id}, {"$addToSet": {"open_translations": translation_id}}
        )

    async def release(self, translator_id: str, translation_id: str) -> None:
        """Stop counting a translation in its translator's load."""
        await self.translators.update_one(
            {"_id": translator_id}, {"$pull": {"open_translations": translation_id}}
        )

    async def write(
        self,
        assignment_id: str,
        *,
        translations: list[TranslationEntry],
        seq: int,
        events: Sequence[Event],
    ) -> None:
        """Record the round's translations as they are now and their events (the last of
        sequence `seq`) in one write; a new open one is filed among the open ones before (a
        stop between: skipped on read), a done (or closed) one taken off them after."""
        for t in translations:
            if t.state in OPEN_TRANSLATION:
                await self.store.key_add(OPEN_TRANSLATIONS_KEY, t.id)
        update = {"$set": {"translations": [t.model_dump() for t in translations], "seq": seq}}
        await self.store.assignments.update_one({"_id": assignment_id}, with_events(update, events))
        for t in translations:
            if t.state not in OPEN_TRANSLATION:
                await self.store.key_remove(OPEN_TRANSLATIONS_KEY, t.id)

    async def close(self, assignment_id: str, *, translations: list[TranslationEntry]) -> None:
        """Record an ended round's translations as they are now (the open ones closed; no event,
        its sequence unchanged), then take the closed ones off the open ones."""
        update = {"$set": {"translations": [t.model_dump() for t in translations]}}
        await self.store.assignments.update_one({"_id": assignment_id}, update)
        for t in translations:
            if t.state is TranslationState.CLOSED:
                await self.store.key_remove(OPEN_TRANSLATIONS_KEY, t.id)

    async def file_open(self, translation_id: str) -> None:
        """File a translation among the open ones, before its round is written with it."""
        await self.store.key_add(OPEN_TRANSLATIONS_KEY, translation_id)

    async def open_ids(self) -> list[str]:
        """The ids of the translations filed as open."""
        return await self.store.key_ids(OPEN_TRANSLATIONS_KEY)


DUE_SCAN_BUDGET = 500  # bucket entries one page request may look at before it returns a cursor
# Day buckets read in one request at most while a page walks them: as many as their counts say
# the page needs (so that days with few rounds each do not cost a request each, and a busy day
# is read alone).
DUE_DAYS_AT_ONCE = 8
DUE_MONTHS_AT_ONCE = 2  # months' lists of days read in one request while a page walks them


@dataclass(frozen=True)
class _DueWalk:
    """A page from the day buckets of a scope, soonest due first: at most DUE_SCAN_BUDGET
    entries looked at, their assignments read a batch at a time (as many as the page still
    lacks, read together). The walk reads the scope's months (and what is left of the list of
    every day of the versions before), then the days of the soonest months, DUE_MONTHS_AT_ONCE
    at a time when it needs them, then the day buckets, as many together as their counts say
    the page needs (`rules.due_days_to_read`), up to DUE_DAYS_AT_ONCE."""

    store: Store
    scope: str
    keep: Callable[[AssignmentDoc], bool]
    projection: dict[str, int]

    async def page(self, after: str | None, limit: int) -> tuple[list[AssignmentDoc], str | None]:
        """Up to `limit` kept assignments after the sort key `after`, and where to go on when
        the budget ran out first (else None)."""
        found: list[AssignmentDoc] = []
        looked = 0
        start = None if after is None else due_day(after)
        (months_listed, _), (every_day, _) = await self.store.key_counts(
            [f"due:{self.scope}:months", f"due:{self.scope}:days"]
        )
        unfolded: dict[str, set[str]] = {}
        for day in every_day:
            unfolded.setdefault(due_month(day), set()).add(day)
        months = sorted(
            m for m in set(months_listed) | set(unfolded) if start is None or m >= due_month(start)
        )
        days: list[str] = []  # the days listed and not read yet, in order
        counts: dict[str, int] = {}
        keys: list[str] = []  # the entries read and not looked at yet, in order
        while True:
            size = min(DUE_SCAN_BUDGET - looked, max(limit - len(found), 1))
            while len(keys) < max(size, 1) and (days or months):  # at the budget: anything left?
                wanted = max(size, 1) - len(keys)
                while months and not due_days_enough(days, counts, wanted, DUE_DAYS_AT_ONCE):
                    chunk, months = months[:DUE_MONTHS_AT_ONCE], months[DUE_MONTHS_AT_ONCE:]
                    lists = await self.store.key_counts(
                        [f"due:{self.scope}:days:{m}" for m in chunk]
                    )
                    for month, (listed, filed) in zip(chunk, lists, strict=True):
                        more = set(listed) | unfolded.get(month, set())
                        days += sorted(d for d in more if start is None or d >= start)
                        counts.update(filed)
                if not days:
                    break
                take = due_days_to_read(days, counts, wanted, DUE_DAYS_AT_ONCE)
                chunk, days = days[:take], days[take:]
                buckets = await self.store.key_ids_of([f"due:{self.scope}:{d}" for d in chunk])
                # A day's entries all sort after the earlier day's: the sort key starts with it.
                keys += [k for b in buckets for k in sorted(b) if after is None or k > after]
            if not keys:
                return found, None
            if looked >= DUE_SCAN_BUDGET:
                return found, after
            batch, keys = keys[:size], keys[size:]
            looked += len(batch)
            ids = [key.split("|", 1)[1] for key in batch]
            docs = await self.store.listed(ids, self.projection)
            for key, doc in zip(batch, docs, strict=True):
                after = key
                # An entry whose round never came, or came from another attempt, is skipped.
                if doc is not None and doc.sort_key == key and self.keep(doc):
                    found.append(doc)
                    if len(found) == limit:
                        return found, None


MATCHING_KEY = "matching"
OPEN_FOLLOW_UPS_KEY = "follow-ups:open"
UNMATCHED_READINGS_KEY = "second-readings:unmatched"
OPEN_TRANSLATIONS_KEY = "translations:open"


async def _cases_listed(store: Store, case_ids: list[str], status: CaseStatus) -> list[CaseDoc]:
    """The cases of `case_ids` still in `status` (each read by `_id`), in queue order."""
    found = await asyncio.gather(*(store.case(c) for c in case_ids))
    cases = [c for c in found if c is not None and c.status == status]
    return sorted(cases, key=lambda c: c.queue_key or "")


def _pulled_from(names: Sequence[str], item: str) -> list[UpdateOne]:
    """The writes that remove an id from several keyed index documents (one request)."""
    return [UpdateOne({"_id": name}, {"$pull": {"ids": item}}) for name in names]


def _add_to(item: str) -> dict[str, Any]:
    """The update that lists `item` in a keyed index document once."""
    return {"$addToSet": {"ids": item}}


def due_filing(assignments: Sequence[AssignmentDoc]) -> list[UpdateOne]:
    """The writes that file rounds in the day buckets of their due dates (all, and their
    reviewer's) and list those days and months. Rounds filed in one bucket go in its one write:
    a batch's rounds share their days, and the local store takes updates of existing documents
    badly in numbers (docs/store-contract.md)."""
    filed: dict[tuple[str, str], list[str]] = {}
    for assignment in assignments:
        day = due_day(assignment.sort_key)
        for scope in (due_scope(None), due_scope(assignment.reviewer_id)):
            filed.setdefault((scope, day), []).append(assignment.sort_key)
    return [
        write
        for (scope, day), keys in filed.items()
        for write in [
            UpdateOne(
                {"_id": f"due:{scope}:{day}"}, {"$addToSet": {"ids": {"$each": keys}}}, upsert=True
            ),
            *_day_filed(scope, day, len(keys)),
        ]
    ]


def _day_filed(scope: str, day: str, count: int) -> list[UpdateOne]:
    """The writes that list a day of a scope's due walk, and its month (each once), and count
    `count` more keys filed in its bucket."""
    return [
        UpdateOne({"_id": f"due:{scope}:months"}, _add_to(due_month(day)), upsert=True),
        UpdateOne(
            {"_id": f"due:{scope}:days:{due_month(day)}"},
            {**_add_to(day), "$inc": {f"n.{day}": count}},
            upsert=True,
        ),
    ]


def due_scope(reviewer_id: str | None) -> str:
    """The day buckets of every assignment (None) or of one reviewer's."""
    return "all" if reviewer_id is None else f"reviewer:{reviewer_id}"


WAITING_KEY = "waiting"


# --- set-up ---------------------------------------------------------------------------------


# Seals a reviewer's work address as the directory keeps it (`contacts.sealed_contact`).
SealContact = Callable[[str, str | None], Sealed | None]
# Seals a translator's, with their languages (`contacts.sealed_translator_contact`).
SealTranslatorContact = Callable[[str, TranslatorIn], Sealed | None]


async def file_due_many(store: Store, sort_keys: dict[str, list[str]]) -> None:
    """File many rounds at once (reviewer id -> their sort keys): for loading data in
    bulk, with the matching lock held or the service stopped."""
    for reviewer_id, keys in sort_keys.items():
        days: dict[str, list[str]] = {}
        for key in keys:
            days.setdefault(due_day(key), []).append(key)
        for scope in (due_scope(None), due_scope(reviewer_id)):
            for day, filed in days.items():
                await store.keys.update_one(
                    {"_id": f"due:{scope}:{day}"},
                    {"$push": {"ids": {"$each": filed}}},
                    upsert=True,
                )
                await store.keys.bulk_write(_day_filed(scope, day, len(filed)))


async def fold_due_days(store: Store, _db: object = None) -> None:
    """Fold each scope's list of every day (`due:<scope>:days`, the versions before) into
    its months (`due:<scope>:months`, `due:<scope>:days:<month>`; their counts unknown),
    then take the folded days out of it: a day a copy of the version before files meanwhile
    stays there, and the walk still reads it (`_db`: as the start-up hooks are called)."""
    scopes = [due_scope(None)] + [due_scope(r.id) for r in await store.all_reviewers()]
    folded = 0
    for scope in scopes:
        days = await store.key_ids(f"due:{scope}:days")
        if not days:
            continue
        months: dict[str, list[str]] = {}
        for day in days:
            months.setdefault(due_month(day), []).append(day)
        await store.keys.bulk_write(
            [
                UpdateOne(
                    {"_id": f"due:{scope}:months"},
                    {"$addToSet": {"ids": {"$each": sorted(months)}}},
                    upsert=True,
                ),
                *(
                    UpdateOne(
                        {"_id": f"due:{scope}:days:{month}"},
                        {"$addToSet": {"ids": {"$each": listed}}},
                        upsert=True,
                    )
                    for month, listed in sorted(months.items())
                ),
            ]
        )
        await store.keys.update_one({"_id": f"due:{scope}:days"}, {"$pullAll": {"ids": days}})
        folded += len(days)
    if folded:
        log.info("due days folded into months", days=folded, scopes=len(scopes))


async def init(
    db: AsyncDatabase[Document],
    seed_file: Path | None = None,
    seal: SealContact | None = None,
    seal_translator: SealTranslatorContact | None = None,
) -> None:
    """Create the indexes; fill an empty reviewer (and translator) directory from `seed_file`
    when given, their work addresses sealed (`seal`, `seal_translator`; without: none kept)."""
    for collection, indexes in INDEXES.items():
        for keys in indexes:
            await db[collection].create_index(keys)
    if seed_file is not None:
        await seed_reviewers(Store(db), seed_file, seal)
        await seed_translators(Store(db), seed_file, seal_translator)


def load_seed(seed_file: Path) -> list[ReviewerIn]:
    """The reviewers listed in a seed file (`{"reviewers": [...]}`), validated."""
    data = json.loads(seed_file.read_text(encoding="utf-8"))
    return [ReviewerIn.model_validate(item) for item in data["reviewers"]]


async def seed_reviewers(store: Store, seed_file: Path, seal: SealContact | None = None) -> int:
    """Insert the seed reviewers if the directory is empty, each work address sealed as the
    directory keeps it (`seal`; without it, none kept); returns how many were inserted."""
    if await store.reviewers.find_one({}, {"_id": 1}) is not None:
        return 0
    inserted = 0
    for reviewer in load_seed(seed_file):
        contact = seal(reviewer.id, reviewer.email) if seal is not None else None
        # False: another instance seeded it first.
        inserted += await store.insert_reviewer(ReviewerDoc.new(reviewer, now(), contact))
    log.info("reviewer directory seeded", count=inserted, file=seed_file.name)
    return inserted


def load_translator_seed(seed_file: Path) -> list[tuple[str, TranslatorIn]]:
    """The translators a seed file lists (`{"translators": [{"id": ..., ...}]}`), validated."""
    data = json.loads(seed_file.read_text(encoding="utf-8"))
    return [
        (item["id"], TranslatorIn.model_validate({k: v for k, v in item.items() if k != "id"}))
        for item in data.get("translators", [])
    ]


async def seed_translators(
    store: Store, seed_file: Path, seal: SealTranslatorContact | None = None
) -> int:
    """Insert the seed's translators (`{"translators": [...]}`) if there are none yet, each
    work address sealed as the directory keeps it (`seal`; without it, none kept)."""
    if await store.translations.translators.find_one({}, {"_id": 1}) is not None:
        return 0
    items = load_translator_seed(seed_file)
    for translator_id, fields in items:
        contact = seal(translator_id, fields) if seal is not None else None
        doc = {
            **fields.model_dump(exclude={"email"}),
            "_id": translator_id,
            "contact": contact,
            "updated_at": now(),
        }
        await store.translations.put_translator(TranslatorDoc.model_validate(doc))
    log.info("translators seeded", count=len(items), file=seed_file.name)
    return len(items)
