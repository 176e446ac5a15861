"""Intake's repository: the stored documents as typed models, every MongoDB operator, indexes.

- `cases`: one document per case (the aggregate): its sealed content (the patient's identity
  and contact, the physician's name, the clinical summary: `content`, bound to the case), codes,
  consent, status, timeline, the current reviewer, and its outbox. `_id` is the case id.
- `documents`: record metadata; `_id` is `<case_id>:<document id>`, the document id a keyed
  digest of the bytes (`rules.document_id`), so the same file twice on a case is one document.
  The case lists its records' ids (`record_ids`). The original file name and the SHA-256 of
  the bytes are sealed (`details`, bound to the record's `_id`).
- `record_chunks`: the records' bytes in pieces of 255 KiB, each sealed and bound to its own
  `_id` `<record id>:<n>`, read and deleted by `_id` (GridFS finds and deletes its chunks by
  `files_id`, a scan here). Metadata and pieces stored before sealing (`filename`, `sha256`,
  `data` in clear) are still read.
- `refblocks`: claimed blocks of human references, `_id` `refblock:<year>:<block>`, and a
  hint of the last block claimed, `refblock:<year>:last`, so a claim starts near the end
  instead of reading every block.
- `case_lists`: the lists people open, as keyed entries (`case_lists` below): `_id`
  `<list>|<position>` -> a case id; `case_list_hints`: `_id` `<list>` -> a recent last
  position (where to start probing). A list is
  `all`, `patient:<sub>`, `partner:<partner id>` or `reviewer:<reviewer id>`.
- `idempotency`: `_id` `<caller>:<Idempotency-Key>` -> the case that key created.
- `audit_trail`, `audit_heads`: the access trail, one hash chain per case, every read and
  write of a case's health data by a person, refusals included (`avis.shared.audit`; entries
  read by `_id` `<case_id>:<seq>`). A coordinator's reason is kept there, sealed.
- `inbox_<day>`: the idempotent consumer's markers, one collection per day (shared plumbing).
- `migrations`: `_id` = a migration's name -> how far it went (`avis.intake.migrate`).

Every hot read goes by `_id` (FerretDB serves nothing else from an index): a case's records
are listed by the ids embedded in the case (`record_ids`), lists by positions.

Writers hold the case's lock around every write (the store does not serialise them); a state
change and the events it causes are one write (`avis.shared.outbox.with_events`); a submission's
write also answers with the case it left, so the answer needs no second read.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from avis.intake.models import (
    CasePage,
    CaseStatus,
    CaseSummary,
    CaseView,
    ClinicalView,
    ConsentView,
    ContentType,
    DocumentKind,
    DocumentView,
    InformationRequestView,
    PatientView,
    PhysicianView,
    RequestState,
    TimelineEntry,
    TimelineKind,
)
from avis.intake.rules import (
    ACTIONS,
    Access,
    CaseState,
    Scope,
    age_on,
    chunk_aad,
    refblock_id,
    reviewer_access_lapsed,
)
from avis.shared.access_log import TrailPage
from avis.shared.audit import AuditEntry, AuditRecord, AuditTrail
from avis.shared.envelope import Event
from avis.shared.events import ConsentScope, Language, Question, Specialty, Urgency
from avis.shared.mongo import AsText, Document, Stored, by_ids
from avis.shared.outbox import new_with_events, with_events
from avis.shared.retention import Calendar
from avis.shared.sealing import Keyring, Sealed

CHUNK_BYTES = 255 * 1024


def refblock_hint_id(year: int) -> str:
    """The `_id` of the hint of the last reference block claimed in `year`."""
    return f"refblock:{year:04d}:last"


WITHOUT_OUTBOX = {"outbox": 0, "outbox_pending": 0}


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


class CaseContent(BaseModel):
    """What a case keeps sealed, bound to the case (`rules.case_aad`): the patient's identity
    and contact, the physician's name and contact and the clinical summary."""

    patient: StoredPatient
    physician_name: str | None = None
    physician_email: str | None = None
    physician_language: Language | None = None
    clinical_summary: str


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


class StoredClaim(BaseModel):
    """The keyed digest of a case's one-time claim secret."""

    kid: str
    digest: str
    claimed_at: datetime | None = None


class StoredRequest(BaseModel):
    """A request for more information from the case's specialist: its question and answer
    sealed under the case's key (`rules.information_aad`), and what became of it."""

    id: str
    assignment_id: str | None = None
    requested_at: datetime
    expires_at: datetime
    question: Sealed
    records_before: int = 0  # records the case held when it was asked
    answer: Sealed | None = None
    answered_at: datetime | None = None
    documents_added: int = 0
    closed_at: datetime | None = None  # the review went on (answered, or expired)
    expired: bool = False

    @property
    def state(self) -> RequestState:
        """Open while neither answered nor closed; answered; or expired unanswered."""
        if self.answered_at is not None:
            return RequestState.ANSWERED
        return RequestState.EXPIRED if self.expired or self.closed_at else RequestState.OPEN

    def view(
        self, question: str | None = None, answer: str | None = None
    ) -> InformationRequestView:
        """The API view of this request (its texts, opened, only where given)."""
        return InformationRequestView(
            id=self.id,
            state=self.state,
            requested_at=self.requested_at,
            expires_at=self.expires_at,
            answered_at=self.answered_at,
            closed_at=self.closed_at,
            question=question,
            answer=answer,
            documents_added=self.documents_added,
        )


class StoredHold(BaseModel):
    """A legal hold on a case: its erasure waits while it stands."""

    by: str
    reason: Sealed
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
    content: Sealed | None = None  # CaseContent; None for a case stored before sealing
    patient: StoredPatient | None = None  # in clear: a case stored before sealing
    physician: StoredPhysician | None = None  # its name in clear only before sealing
    specialty: Specialty
    urgency: Urgency
    language: Language
    questions: list[Question]
    clinical_summary: str | None = None  # in clear: a case stored before sealing
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None = None
    withdrawn_at: datetime | None = None
    erasure_requested_at: datetime | None = None
    # The case's data key in the key service (a reference, never the key): everything of the
    # case is sealed under it. None: a case sealed under the service's keyring.
    key_ref: str | None = None
    erased_at: datetime | None = None  # its key destroyed: ids, codes and times stay
    # Given its key by the migration (avis.intake.migrate), not yet all sealed under it.
    keying: bool = False
    hold: StoredHold | None = None
    consent: StoredConsent | None = None
    traceparent: str = ""
    reviewer_id: str | None = None
    assignment_id: str | None = None
    assignment_at: datetime | None = None
    # The sequence number of the fact that set the status (`rules.newer`); 0 before sequences.
    status_seq: int = 0
    # The specialist's requests for more information, oldest first.
    requests: list[StoredRequest] = Field(default_factory=list)
    # Each entry one JSON text (docs/store-contract.md, "What a read decodes"): the timeline is
    # appended to, never changed in part, and read with every case.
    timeline: list[AsText[StoredEntry]] = Field(default_factory=list)
    # The case's records, in upload order: read by `_id`, never found by a scan.
    record_ids: list[str] = Field(default_factory=list)
    # A partner-filed case: the keyed digest of its claim secret (never the secret), and the
    # id of the key it was derived from.
    claim: StoredClaim | None = None

    @property
    def open_request(self) -> StoredRequest | None:
        """The request for more information open now, if one is."""
        return next((r for r in self.requests if r.state is RequestState.OPEN), None)

    @property
    def reviewer_last_active(self) -> datetime | None:
        """When the current reviewer last reported (their latest completed review), if ever."""
        done = [e.at for e in self.timeline if e.kind == TimelineKind.REVIEW_COMPLETED]
        last = max(done, default=None)
        return last if last is None or last.tzinfo else last.replace(tzinfo=UTC)

    def access(self, at: datetime, reviewer_window: timedelta) -> Access:
        """What the access policy looks at, at `at` (a reviewer's access lapses
        `reviewer_window` after their last report)."""
        scopes = frozenset(self.consent.scopes) if self.consent else None
        lapsed = reviewer_access_lapsed(
            last_active=self.reviewer_last_active,
            request_open=self.open_request is not None,  # follow-up questions: not yet
            at=at,
            window=reviewer_window,
        )
        return Access(
            self.status, self.patient_id, self.partner_id, self.reviewer_id, scopes, lapsed
        )

    @property
    def state(self) -> CaseState:
        """What decides what an event does to the case."""
        at = self.assignment_at
        return CaseState(
            status=self.status,
            timeline_ids=frozenset(e.id for e in self.timeline),
            assignment_id=self.assignment_id,
            assignment_at=at if at is None or at.tzinfo else at.replace(tzinfo=UTC),
            seq=self.status_seq,
        )

    def view(self, documents: list[DocumentView], *, with_progress: bool = True) -> CaseView:
        """The case with its records' metadata, as the API shows it (no identity, no clinical
        text; the questions, records and timeline only `with_progress`)."""
        consent = self.consent
        if not with_progress:
            documents = []
        return CaseView(
            **_summary(self).model_dump(),
            language=self.language,
            questions=self.questions if with_progress else [],
            partner_id=self.partner_id,
            partner_reference=self.partner_reference,
            submitted_at=self.submitted_at,
            withdrawn_at=self.withdrawn_at,
            erasure_requested_at=self.erasure_requested_at,
            legal_hold=self.hold is not None,
            legal_hold_since=self.hold.at if self.hold else None,
            consent=ConsentView.model_validate(consent.model_dump()) if consent else None,
            documents=documents,
            timeline=[TimelineEntry.model_validate(e.model_dump()) for e in self.timeline]
            if with_progress
            else [],
            information_requests=[r.view() for r in self.requests] if with_progress else [],
        )

    def opened(self, content: CaseContent | None) -> CaseContent:
        """The case's sealed content, opened (`content`), or as a case stored before sealing
        kept it in clear."""
        if content is not None:
            return content
        assert self.patient is not None and self.clinical_summary is not None
        name = self.physician.name if self.physician else None
        return CaseContent(
            patient=self.patient, physician_name=name, clinical_summary=self.clinical_summary
        )

    def clinical_view(
        self,
        documents: list[DocumentView],
        content: CaseContent,
        *,
        today: date,
        with_patient: bool,
        requests: list[InformationRequestView] | None = None,
    ) -> ClinicalView:
        """The clinical content of the case (with its requests for more information, opened:
        `requests`); the patient's identity only `with_patient`."""
        patient = content.patient
        physician = None
        if self.physician is not None or content.physician_name is not None:
            code = self.physician.institution_code if self.physician else None
            physician = PhysicianView(name=content.physician_name, institution_code=code)
        return ClinicalView(
            case_id=self.id,
            reference=self.reference,
            specialty=self.specialty,
            urgency=self.urgency,
            language=self.language,
            questions=self.questions,
            clinical_summary=content.clinical_summary,
            age_years=age_on(date.fromisoformat(patient.birth_date), today),
            physician=physician,
            patient=PatientView.model_validate(patient.model_dump()) if with_patient else None,
            documents=documents,
            information_requests=requests or [],
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
    erased_at: datetime | None = None

    def view(self) -> CaseSummary:
        """The case as a list shows it."""
        return _summary(self)


def _summary(case: Case | CaseRow) -> CaseSummary:
    """What a list shows of a case, read whole or as a row."""
    return CaseSummary(
        case_id=case.id,
        reference=case.reference,
        status=case.status,
        specialty=case.specialty,
        urgency=case.urgency,
        created_at=case.created_at,
        updated_at=case.updated_at,
        erased_at=case.erased_at,
    )


ROW = {name: 1 for name in CaseRow.model_fields if name != "id"} | {
    "patient_id": 1,
    "partner_id": 1,
    "reviewer_id": 1,
}
HINT_EVERY = 16  # positions between two writes of a list's stored hint
LIST_SCAN_BUDGET = 500  # entries one page request may look at before it returns a cursor


def list_key(field: str | None, value: str | None) -> str:
    """The keyed list serving a scope's field (None: every case)."""
    if field is None:
        return "all"
    return f"{field.removesuffix('_id')}:{value}"


def list_entry_id(key: str, position: int) -> str:
    """The `_id` of a list's entry at `position` (zero-padded: ids sort by position)."""
    return f"{key}|{position:012d}"


@dataclass(frozen=True)
class ListedPage:
    """Rows of a list, newest first, and the position to continue before (None: the end)."""

    rows: list[CaseRow]
    positions: list[int]
    more: int | None

    def view(self, limit: int) -> CasePage:
        """The page of `limit` rows (up to `limit + 1` were read) and the cursor of the next:
        the position of the last row shown, or the one the scan stopped at (None: the end)."""
        if len(self.rows) > limit:
            cursor: str | None = str(self.positions[limit - 1])
        else:
            cursor = None if self.more is None else str(self.more + 1)
        return CasePage(items=[row.view() for row in self.rows[:limit]], next_cursor=cursor)


class RecordDetails(BaseModel):
    """What a record's metadata keeps sealed: the file's original name (it can name the
    patient) and the SHA-256 of its bytes (a plain hash of health data)."""

    filename: str | None = None
    sha256: str


class Record(Stored):
    """A record's metadata; its bytes are in the `record_chunks` pieces of the same id."""

    id: str = Field(alias="_id")
    case_id: str
    document_id: str
    details: Sealed | None = None  # RecordDetails, bound to `rules.record_aad(id)`
    sha256: str | None = None  # in clear: stored before sealing
    filename: str | None = None  # idem
    kind: DocumentKind
    content_type: ContentType
    size: int
    uploaded_at: datetime
    uploaded_by: Actor
    chunks: int = 0  # pieces of its bytes in `record_chunks`

    def view(self, details: RecordDetails, *, with_filename: bool = True) -> DocumentView:
        """The record's metadata as the API shows it, with its opened `details` (a file name can
        name the patient: only `with_filename`)."""
        return DocumentView(
            document_id=self.document_id,
            kind=self.kind,
            content_type=self.content_type,
            size=self.size,
            sha256=details.sha256,
            filename=details.filename if with_filename else None,
            uploaded_at=self.uploaded_at,
        )


class KeyRow(Stored):
    """What says whether a case is under its own key (the migration's walk)."""

    id: str = Field(alias="_id")
    key_ref: str | None = None
    keying: bool = False
    erased_at: datetime | None = None


KEY_ROW = {"key_ref": 1, "keying": 1, "erased_at": 1}


class Checkpoint(Stored):
    """How far a migration went: the last case it finished (`_id` order) and its counts."""

    id: str = Field(alias="_id")
    after: str = ""
    keyed: int = 0
    skipped: int = 0
    finished_at: datetime | None = None


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


# The cases: one document each (its writers hold it among the copies, main.create_app).
CASES = "cases"
IDEMPOTENCY = "idempotency"


class Store:
    """Intake's collections and every operation on them."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.cases = db[CASES]
        self.documents = db["documents"]
        self.refblocks = db["refblocks"]
        self.idempotency = db[IDEMPOTENCY]
        # What is kept for a set time, and when it goes (avis.shared.retention).
        self.calendar = Calendar(db)
        self.case_lists = db["case_lists"]
        self.list_hints = db["case_list_hints"]
        self._ends: dict[str, int] = {}  # the last position this process knows of each list
        self._spare: dict[str, list[int]] = {}  # reserved positions whose write failed
        self.chunks = db["record_chunks"]
        self.migrations = db["migrations"]
        self.trail = AuditTrail(db)
        self.information = InformationStore(self)

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

    async def list_append(self, key: str, case_id: str) -> int:
        """Add a case at the end of a keyed list; returns its position (`list_reserve` and
        `list_claim` in one, for a caller that holds the list's lock throughout)."""
        while True:
            position = await self.list_reserve(key)
            if await self.list_claim(key, position, case_id):
                return position

    async def list_reserve(self, key: str) -> int:
        """A position at the end of a keyed list that this process has not handed out yet.

        The caller holds the list's lock for this only (mostly no store call): the write,
        `list_claim`, comes after the lock is released, so appends to one list do not queue
        behind each other's writes. A position handed back by a failed write comes first.
        """
        spare = self._spare.get(key)
        if spare:
            return spare.pop()
        if key not in self._ends:
            hinted = await self._hint(key)
            self._ends[key] = max(self._ends.get(key, 0), hinted)  # a reader may have probed
        self._ends[key] += 1
        return self._ends[key]

    async def list_claim(self, key: str, position: int, case_id: str) -> bool:
        """Write a case at a reserved position; False if another instance holds it (reserve
        the next one).

        The position is claimed by inserting its natural `_id`, so instances never overwrite
        each other's entries; a write that fails hands the position back, so this process
        leaves no hole a forward probe would stop at.
        """
        try:
            await self.case_lists.insert_one(
                {"_id": list_entry_id(key, position), "case_id": case_id}
            )
        except DuplicateKeyError:
            return False
        except BaseException:
            self._spare.setdefault(key, []).append(position)
            raise
        # The stored hint moves every HINT_EVERY positions only (one write instead of two per
        # append, and each write takes SQLite's one write lock): readers step over the rest.
        if position == 1 or position % HINT_EVERY == 0:
            with contextlib.suppress(DuplicateKeyError):  # a racing first upsert: a hint anyway
                await self.list_hints.update_one(
                    {"_id": key}, {"$set": {"last": position}}, upsert=True
                )
        return True

    async def _hint(self, key: str) -> int:
        """The stored hint of a list's last position (0: none yet)."""
        hint = await self.list_hints.find_one({"_id": key})
        return int(hint["last"]) if hint else 0

    async def list_last(self, key: str) -> int:
        """The last position of a keyed list (the hint, then forward to the true end)."""
        last = max(self._ends.get(key, 0), await self._hint(key))
        while await self.case_lists.find_one({"_id": list_entry_id(key, last + 1)}, {"_id": 1}):
            last += 1
        # positions reserved meanwhile (their writes in flight) stay reserved
        self._ends[key] = max(self._ends.get(key, 0), last)
        return last

    async def cases_page(self, scope: Scope, before: int | None, limit: int) -> ListedPage:
        """Up to `limit` cases in `scope`, newest first, at positions before `before`.

        Each entry is read by `_id`, then its case by `_id`, and kept if the case is (still)
        in the scope: an entry written before a case that never came, or a reviewer since
        replaced, is skipped. The entries are read a batch at a time (as many as the page still
        lacks: the entries in one request, then their cases in one); at most LIST_SCAN_BUDGET
        entries are looked at per call, so a rare status costs a few short pages, never a read
        of everything.
        """
        key = list_key(scope.field, scope.value)
        start = await self.list_last(key) if before is None else before - 1
        statuses = None if scope.statuses is None else {s.value for s in scope.statuses}
        rows: list[CaseRow] = []
        positions: list[int] = []
        seen: set[str] = set()
        position = start
        stop = max(0, start - LIST_SCAN_BUDGET)
        while position > stop and len(rows) < limit:
            batch = range(position, max(stop, position - max(limit - len(rows), 1)), -1)
            position = batch[-1] - 1
            for at, doc in await self._listed(key, batch):
                if doc is None or doc["_id"] in seen or len(rows) == limit:
                    continue
                seen.add(doc["_id"])
                if scope.field is not None and doc.get(scope.field) != scope.value:
                    continue
                if statuses is not None and doc["status"] not in statuses:
                    continue
                rows.append(CaseRow.model_validate(doc))
                positions.append(at)
        return ListedPage(rows, positions, position if position > 0 else None)

    async def _listed(self, key: str, positions: range) -> list[tuple[int, Document | None]]:
        """A list's entries at `positions`, each with the row of the case it names (None:
        either is missing)."""
        entries = await by_ids(self.case_lists, [list_entry_id(key, p) for p in positions])
        named = [e["case_id"] for e in entries if e is not None]
        cases = iter(await by_ids(self.cases, named, ROW))
        return [
            (p, None if e is None else next(cases)) for p, e in zip(positions, entries, strict=True)
        ]

    async def submit(
        self,
        case_id: str,
        *,
        at: datetime,
        consent: StoredConsent,
        traceparent: str,
        entry: StoredEntry,
        events: Sequence[Event],
        claim: StoredClaim | None = None,
    ) -> Case | None:
        """Record the submission, its timeline entry, its claim digest (a partner's case) and its
        events in one write; the case as it is then (None: not there). The answer carries the
        outbox too (the local store takes no projection on this command, docs/store-contract.md),
        which the model leaves out."""
        fields: dict[str, Any] = {
            "status": CaseStatus.SUBMITTED.value,
            "submitted_at": at,
            "updated_at": at,
            "traceparent": traceparent,
            "consent": consent.model_dump(),
        }
        if claim is not None:
            fields["claim"] = claim.model_dump(exclude_none=True)
        update = {"$set": fields, "$push": {"timeline": entry.model_dump_json()}}
        doc = await self.cases.find_one_and_update(
            {"_id": case_id}, with_events(update, events), return_document=ReturnDocument.AFTER
        )
        return Case.model_validate(doc) if doc else None

    async def withdraw(
        self, case_id: str, *, at: datetime, entry: StoredEntry, events: Sequence[Event]
    ) -> None:
        """Record the withdrawal, its timeline entry and its events (if any) in one write."""
        update = {
            "$set": {"status": CaseStatus.WITHDRAWN.value, "withdrawn_at": at, "updated_at": at},
            "$push": {"timeline": entry.model_dump_json()},
        }
        await self.cases.update_one({"_id": case_id}, with_events(update, events))

    async def request_erasure(self, case_id: str, *, at: datetime, entry: StoredEntry) -> None:
        """Record the patient's request for erasure and its timeline entry in one write."""
        update = {
            "$set": {"erasure_requested_at": at, "updated_at": at},
            "$push": {"timeline": entry.model_dump_json()},
        }
        await self.cases.update_one({"_id": case_id}, update)

    async def erase(
        self, case: Case, *, at: datetime, entry: StoredEntry, events: Sequence[Event]
    ) -> None:
        """Leave the case's skeleton (ids, codes, times) with its erasure, its timeline entry
        and its event in one write, then remove its records; what they held was sealed under
        the case key, destroyed before this."""
        update = {
            "$set": {"erased_at": at, "updated_at": at, "record_ids": []},
            "$unset": {"content": "", "patient": "", "clinical_summary": "", "claim": ""},
            "$push": {"timeline": entry.model_dump_json()},
        }
        await self.cases.update_one({"_id": case.id}, with_events(update, events))
        for record in await self.records_of(case):
            await self.documents.delete_one({"_id": record.id})
            for n in range(record.chunks):
                await self.chunks.delete_one({"_id": chunk_id(record.id, n)})

    async def every_case(self) -> AsyncIterator[Case]:
        """Every case, without its outbox: a whole-collection read, for an operator's command
        (the reconciliation after a restore), never a request's path."""
        async for doc in self.cases.find({}, WITHOUT_OUTBOX):
            yield Case.model_validate(doc)

    async def set_hold(self, case_id: str, hold: StoredHold | None, at: datetime) -> None:
        """Set or lift a case's legal hold."""
        fields: dict[str, Any] = {"updated_at": at}
        change: dict[str, Any] = {"$set": fields}
        if hold is None:
            change["$unset"] = {"hold": ""}
        else:
            fields["hold"] = hold.model_dump()
        await self.cases.update_one({"_id": case_id}, change)

    async def follow(
        self,
        case_id: str,
        *,
        status: CaseStatus,
        entry: StoredEntry,
        reviewer: CurrentReviewer | None,
        at: datetime,
        seq: int | None = None,
        requests: list[StoredRequest] | None = None,
    ) -> None:
        """Apply what another service reported: the status, a timeline entry and, when given,
        the current reviewer (None: keep it), the sequence number of the fact that set the
        status (None: the status was not set by it) and the requests for more information as
        they are now (None: unchanged)."""
        fields: dict[str, Any] = {"status": status.value, "updated_at": at}
        if seq is not None:
            fields["status_seq"] = seq
        if requests is not None:
            fields["requests"] = [r.model_dump() for r in requests]
        if reviewer is not None:
            fields |= {"reviewer_id": reviewer.reviewer_id, "assignment_id": reviewer.assignment_id}
            if reviewer.assigned_at is not None:
                fields["assignment_at"] = reviewer.assigned_at
        await self.cases.update_one(
            {"_id": case_id}, {"$set": fields, "$push": {"timeline": entry.model_dump_json()}}
        )

    async def claim(
        self, case_id: str, *, patient_id: str, at: datetime, events: Sequence[Event]
    ) -> None:
        """Give a partner-filed case its patient (its writer checked it had none), with the
        event that says so, in one write."""
        update = {"$set": {"patient_id": patient_id, "claim.claimed_at": at, "updated_at": at}}
        await self.cases.update_one({"_id": case_id}, with_events(update, events))

    # idempotency keys and references

    async def claim_key(self, claim: IdempotencyClaim, until: datetime) -> IdempotencyClaim | None:
        """Claim an Idempotency-Key, kept `until` then purged: None if this claim won, else the
        claim already there."""
        try:
            await self.idempotency.insert_one(claim.to_doc())
            await self.calendar.keep_until(IDEMPOTENCY, claim.id, until)
            return None
        except DuplicateKeyError:
            found = await self.idempotency.find_one({"_id": claim.id})
        # The claim vanished between insert and read: treat the key as new.
        return IdempotencyClaim.model_validate(found) if found else claim

    async def last_refblock(self, year: int) -> int | None:
        """The last reference block claimed in `year` as far as the hint knows (a claim goes
        on from there past any block another instance took since)."""
        hint = await self.refblocks.find_one({"_id": refblock_hint_id(year)})
        return int(hint["block"]) if hint else None

    async def claim_refblock(self, year: int, block: int, at: datetime) -> bool:
        """Claim a reference block; False if another instance holds it. The hint of the last
        block follows (a lost race leaves it lower: the next claim steps over the gap)."""
        try:
            await self.refblocks.insert_one({"_id": refblock_id(year, block), "claimed_at": at})
        except DuplicateKeyError:
            return False
        with contextlib.suppress(DuplicateKeyError):
            await self.refblocks.update_one(
                {"_id": refblock_hint_id(year)},
                {"$set": {"block": block}},
                upsert=True,
            )
        return True

    # records

    async def record(self, record_id: str) -> Record | None:
        """One record's metadata."""
        doc = await self.documents.find_one({"_id": record_id})
        return Record.model_validate(doc) if doc else None

    async def records_of(self, case: Case) -> list[Record]:
        """A case's records, oldest first, each read by the `_id` the case lists."""
        found = [await self.documents.find_one({"_id": rid}) for rid in case.record_ids]
        return [Record.model_validate(d) for d in found if d is not None]

    async def put_record(self, record: Record, data: bytes, keyring: Keyring) -> None:
        """Store a record: the bytes first, each piece sealed where it goes, then the metadata,
        then its id on the case, since the id on the case is what makes it count; an
        interrupted upload leaves at most orphan pieces or metadata, replaced on the next
        attempt (same file, same ids). The caller holds the case's lock."""
        pieces = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
        for n, piece in enumerate(pieces):
            at = chunk_id(record.id, n)
            chunk = {
                "_id": at,
                "record_id": record.id,
                "case_id": record.case_id,
                "n": n,
                "sealed": keyring.seal(piece, chunk_aad(at)).model_dump(),
            }
            await self.chunks.replace_one({"_id": chunk["_id"]}, chunk, upsert=True)
        stored = record.model_copy(update={"chunks": len(pieces)})
        await self.documents.replace_one({"_id": record.id}, stored.to_doc(), upsert=True)
        await self.cases.update_one({"_id": record.case_id}, {"$push": {"record_ids": record.id}})

    async def delete_record(self, case_id: str, record_id: str) -> bool:
        """Remove a record (its id on the case first, then metadata and bytes); False if the
        case does not hold it. The caller holds the case's lock."""
        pulled = await self.cases.update_one({"_id": case_id}, {"$pull": {"record_ids": record_id}})
        record = await self.record(record_id)
        if record is not None:
            await self.documents.delete_one({"_id": record_id})
            for n in range(record.chunks):
                await self.chunks.delete_one({"_id": chunk_id(record_id, n)})
        return pulled.modified_count > 0 or record is not None

    # the access trail

    async def audit(
        self, case_id: str, record: AuditRecord, at: datetime, fold: timedelta | None = None
    ) -> AuditEntry | None:
        """Append to a case's access trail (None: folded into the last entry, see
        `AuditTrail.append`); the caller holds the case's lock."""
        return await self.trail.append(case_id, record, at, fold=fold)

    async def trail_page(self, case_id: str, after: int, limit: int) -> TrailPage:
        """Up to `limit` entries of a case's access trail after position `after`."""
        entries, last = await self.trail.page(case_id, after=after, limit=limit)
        return TrailPage(case_id, entries, last, "intake", ACTIONS)

    async def case_exists(self, case_id: str) -> bool:
        """Whether a case is stored (read by `_id`, nothing else)."""
        return await self.cases.find_one({"_id": case_id}, {"_id": 1}) is not None

    # the migration of cases filed before per-case keys (avis.intake.migrate)

    async def case_keys_after(self, after: str) -> list[KeyRow]:
        """Each case after `after` in `_id` order, with what says whether it has its own key:
        a read of the whole collection (FerretDB serves no other filter from an index), for an
        operator's one-off, never a service's path."""
        cursor = self.cases.find({"_id": {"$gt": after}}, KEY_ROW).sort("_id", ASCENDING)
        return [KeyRow.model_validate(doc) async for doc in cursor]

    async def checkpoint(self, name: str) -> Checkpoint:
        """How far migration `name` went (nowhere yet: an empty checkpoint)."""
        doc = await self.migrations.find_one({"_id": name})
        return Checkpoint.model_validate(doc) if doc else Checkpoint(id=name)

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Record how far a migration went."""
        doc = checkpoint.to_doc()
        await self.migrations.replace_one({"_id": checkpoint.id}, doc, upsert=True)

    async def begin_keying(self, case_id: str, key_ref: str) -> None:
        """Give a case its key, marked as not yet all sealed under it (the caller holds the
        case's lock)."""
        fields = {"key_ref": key_ref, "keying": True}
        await self.cases.update_one({"_id": case_id}, {"$set": fields})

    async def seal_content(self, case_id: str, content: Sealed) -> None:
        """Keep a case's content sealed as `content`, its fields in clear (a case stored before
        sealing) dropped."""
        update = {
            "$set": {"content": content.model_dump()},
            "$unset": {"patient": "", "clinical_summary": "", "physician.name": ""},
        }
        await self.cases.update_one({"_id": case_id}, update)

    async def seal_details(self, record_id: str, details: Sealed) -> None:
        """Keep a record's details sealed as `details`, its fields in clear dropped."""
        update = {
            "$set": {"details": details.model_dump()},
            "$unset": {"filename": "", "sha256": ""},
        }
        await self.documents.update_one({"_id": record_id}, update)

    async def reseal_pieces(self, record: Record, keyring: Keyring) -> int:
        """Seal each piece of a record's bytes under the ring's sealing key where it is not
        already (in clear, or under another key), bound to its place as `put_record` binds it;
        how many pieces were sealed again."""
        done = 0
        for n in range(record.chunks):
            at = chunk_id(record.id, n)
            chunk = await self.chunks.find_one({"_id": at})
            if chunk is None:
                continue
            if "sealed" in chunk:
                sealed = Sealed.model_validate(chunk["sealed"])
                if sealed.kid == keyring.primary_kid:
                    continue
                piece = keyring.open(sealed, chunk_aad(at))
            else:  # stored before sealing
                piece = bytes(chunk["data"])
            update = {
                "$set": {"sealed": keyring.seal(piece, chunk_aad(at)).model_dump()},
                "$unset": {"data": ""},
            }
            await self.chunks.update_one({"_id": at}, update)
            done += 1
        return done

    async def keyed(self, case_id: str, *, events: Sequence[Event]) -> None:
        """A case's values all sealed under its key: the mark goes, with the event that tells
        the other services (in one write)."""
        update = with_events({"$unset": {"keying": ""}}, events)
        await self.cases.update_one({"_id": case_id}, update)

    async def record_bytes(self, record: Record, keyring: Keyring) -> AsyncIterator[bytes] | None:
        """A record's bytes, piece by piece, each read by `_id` and opened; None if they are
        gone."""
        if not await self.chunks.find_one({"_id": chunk_id(record.id, 0)}, {"_id": 1}):
            return None

        async def pieces() -> AsyncIterator[bytes]:
            for n in range(record.chunks):
                chunk = await self.chunks.find_one({"_id": chunk_id(record.id, n)})
                if chunk is None:
                    raise RuntimeError(f"record {record.id} lost its piece {n}")
                if "sealed" not in chunk:  # stored before sealing
                    yield bytes(chunk["data"])
                    continue
                sealed = Sealed.model_validate(chunk["sealed"])
                yield keyring.open(sealed, chunk_aad(chunk_id(record.id, n)))

        return pieces()


def chunk_id(record_id: str, n: int) -> str:
    """The `_id` of a record's n-th piece of bytes (zero-padded: ids sort by piece)."""
    return f"{record_id}:{n:06d}"


async def init(db: AsyncDatabase[Document]) -> None:
    """Create the indexes the intake service relies on (one call each: the store wants that)."""
    store = Store(db)
    await store.cases.create_index("reference", unique=True)
    await store.cases.create_index([("patient_id", ASCENDING), ("_id", DESCENDING)])
    await store.cases.create_index([("partner_id", ASCENDING), ("_id", DESCENDING)])
    await store.cases.create_index([("reviewer_id", ASCENDING), ("_id", DESCENDING)])
    await store.cases.create_index([("status", ASCENDING), ("_id", DESCENDING)])
    await store.documents.create_index([("case_id", ASCENDING), ("uploaded_at", ASCENDING)])


class InformationStore:
    """The write of an answer to a request for more information (intake's `Store` holds it as
    `information`; the request itself comes with `Store.follow`)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def answer(
        self,
        case_id: str,
        *,
        requests: list[StoredRequest],
        entry: StoredEntry,
        at: datetime,
        events: Sequence[Event],
    ) -> None:
        """Record an answer to a request for more information (the requests as they are now),
        its timeline entry and its event, in one write."""
        update = {
            "$set": {"requests": [r.model_dump() for r in requests], "updated_at": at},
            "$push": {"timeline": entry.model_dump_json()},
        }
        await self.store.cases.update_one({"_id": case_id}, with_events(update, events))
