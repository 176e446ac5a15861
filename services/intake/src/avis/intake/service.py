"""Intake's operations: every decision and state transition, testable without HTTP or Kafka.

Writes follow the store contract (DESIGN.md section 4): a case is written by one writer at a
time (`runtime.locks.hold(case_id)`), a state change and its events are one `update_one`, and
uniqueness is claimed by inserting a natural `_id`. Nothing identifying or clinical is logged,
put in a span or sent in clear: the patient's contact travels sealed under the event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import re
import secrets
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog
from gridfs.errors import NoFile
from pymongo.errors import DuplicateKeyError

from avis.intake.models import (
    CASE_ID_PATTERN,
    CaseCreate,
    CaseStatus,
    ContentType,
    Doc,
    DocumentKind,
    SubmitIn,
    TimelineKind,
)
from avis.intake.settings import Settings
from avis.intake.store import Store
from avis.shared.envelope import Event, new_event_id
from avis.shared.events import CaseSubmitted, CaseWithdrawn, ConsentScope, PatientContact
from avis.shared.observability import case_span, current_traceparent
from avis.shared.outbox import with_events
from avis.shared.problems import Problem
from avis.shared.runtime import Runtime
from avis.shared.sealing import Keyring
from avis.shared.security import Principal

SOURCE = "/avis/intake"
REFERENCE_BLOCK = 100  # references claimed at once; fixed, so blocks never overlap
CONSENT_CLOCK_SKEW = timedelta(minutes=5)
EARLIEST_BIRTH_DATE = date(1900, 1, 1)
MAX_FILENAME_CHARS = 255

log = structlog.get_logger("avis.intake")

# Status only moves forward along this order; `withdrawn` ends a case from any earlier step.
RANK = {
    CaseStatus.DRAFT: 0,
    CaseStatus.SUBMITTED: 1,
    CaseStatus.ASSIGNED: 2,
    CaseStatus.IN_REVIEW: 3,
    CaseStatus.REPORT_READY: 4,
}
# While the case is in one of these, its current reviewer may read it.
REVIEWER_READABLE = (CaseStatus.ASSIGNED, CaseStatus.IN_REVIEW, CaseStatus.REPORT_READY)

_ID_RE = re.compile(CASE_ID_PATTERN)


def utcnow() -> datetime:
    """Now, to the millisecond (what the store keeps), so a value reads back as written."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def new_case_id() -> str:
    """A random, time-ordered case id (UUID version 7), so listing by id lists by age."""
    ms = time.time_ns() // 1_000_000
    rand_a = secrets.randbits(12)
    rand_b = secrets.randbits(62)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def is_case_id(value: str) -> bool:
    """Whether `value` has the shape of a case id."""
    return bool(_ID_RE.match(value))


# --- references -------------------------------------------------------------------------------


def format_reference(year: int, number: int) -> str:
    """The human reference of a case: `AV-<year>-<number, at least 6 digits>`."""
    if number < 1:
        raise ValueError("reference numbers start at 1")
    return f"AV-{year:04d}-{number:06d}"


def block_range(block: int, size: int = REFERENCE_BLOCK) -> range:
    """The reference numbers block `block` hands out."""
    return range(block * size + 1, (block + 1) * size + 1)


def refblock_id(year: int, block: int) -> str:
    """The natural `_id` claiming a reference block (zero-padded, so ids sort by block)."""
    return f"refblock:{year:04d}:{block:06d}"


class References:
    """Hands out unique references without a counter serialised by the store.

    Each instance claims a block of numbers by inserting the block's natural `_id` (another
    instance holding it means a duplicate-key error: take the next one) and hands the numbers
    out in-process. A restart abandons the rest of its block: references have gaps, never twins.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = asyncio.Lock()
        self._year = 0
        self._numbers: list[int] = []

    async def next(self) -> str:
        """A reference no other case has."""
        async with self._lock:
            year = utcnow().year
            if year != self._year or not self._numbers:
                block = await self._claim(year)
                self._year = year
                self._numbers = list(reversed(block_range(block)))
            return format_reference(year, self._numbers.pop())

    async def _claim(self, year: int) -> int:
        prefix = refblock_id(year, 0)[: -len("000000")]
        last = await self._store.refblocks.find_one(
            {"_id": {"$gte": prefix, "$lt": prefix + "~"}}, {"_id": 1}, sort=[("_id", -1)]
        )
        block = int(str(last["_id"]).rsplit(":", 1)[1]) + 1 if last else 0
        while True:
            try:
                await self._store.refblocks.insert_one(
                    {"_id": refblock_id(year, block), "claimed_at": utcnow()}
                )
                return block
            except DuplicateKeyError:
                block += 1


# --- records: type, name ----------------------------------------------------------------------

_SIGNATURES: tuple[tuple[int, bytes, ContentType], ...] = (
    (0, b"%PDF-", ContentType.PDF),
    (0, b"\xff\xd8\xff", ContentType.JPEG),
    (0, b"\x89PNG\r\n\x1a\n", ContentType.PNG),
    (128, b"DICM", ContentType.DICOM),
)
_DECLARED_ALIASES = {
    "image/jpg": ContentType.JPEG,
    "image/pjpeg": ContentType.JPEG,
    "application/x-pdf": ContentType.PDF,
    "application/dicom+dcm": ContentType.DICOM,
}
# Plain text is UTF-8 without NUL or other control bytes than tab, line and page breaks.
_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")
_UNDECLARED = {"", "application/octet-stream", "binary/octet-stream"}


def sniff(data: bytes) -> ContentType | None:
    """The record format the bytes themselves show, or None if none of the five."""
    for offset, magic, kind in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return kind
    if data and not _BINARY.search(data):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return ContentType.TEXT
    return None


def declared_type(raw: str | None) -> ContentType | None:
    """The format a client declared for its file (None if it declared none); 415 if unknown."""
    media = (raw or "").split(";", 1)[0].strip().lower()
    if media in _UNDECLARED:
        return None
    if media in _DECLARED_ALIASES:
        return _DECLARED_ALIASES[media]
    try:
        return ContentType(media)
    except ValueError:
        raise unsupported(
            f"files of type {media[:80]!r} are not accepted; "
            f"accepted: {', '.join(t.value for t in ContentType)}"
        ) from None


def unsupported(detail: str) -> Problem:
    """A 415 for a record in a format intake does not take."""
    return Problem(415, "unsupported-document-type", "Unsupported document type", detail)


def check_type(data: bytes, declared: ContentType | None) -> ContentType:
    """The record's format, from its bytes; 415 unless it is one of the five and as declared."""
    found = sniff(data)
    if found is None:
        raise unsupported(
            "the file's content is not a PDF, JPEG, PNG, DICOM or plain text (UTF-8) file"
        )
    if declared is not None and declared != found:
        raise unsupported(f"the file was declared as {declared.value} but its content is {found}")
    return found


def check_filename(name: str | None) -> str | None:
    """The original file name, kept as data: 422 if it is a path or holds control characters."""
    if name is None or not name.strip():
        return None
    name = unicodedata.normalize("NFC", name.strip())

    def bad(why: str) -> Problem:
        return Problem(
            422,
            "invalid-filename",
            "Invalid file name",
            f"the file name {why}; send the bare name of the file, e.g. report.pdf",
            errors=[{"field": "body.file.filename", "message": why}],
        )

    if "/" in name or "\\" in name:
        raise bad("contains a path separator")
    if ".." in name:
        raise bad("contains '..'")
    if re.match(r"^[A-Za-z]:", name):
        raise bad("starts with a drive letter")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise bad("contains control characters")
    if len(name) > MAX_FILENAME_CHARS:
        raise bad(f"is longer than {MAX_FILENAME_CHARS} characters")
    return name


# --- status and timeline ----------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What an event from another service says happened to a case."""

    kind: TimelineKind
    event_id: str
    at: datetime
    assignment_id: str | None = None
    reviewer_id: str | None = None


@dataclass(frozen=True)
class CaseState:
    """The part of a case that decides what an event does to it."""

    status: CaseStatus
    timeline_ids: frozenset[str] = frozenset()
    assignment_id: str | None = None
    assignment_at: datetime | None = None

    @classmethod
    def of(cls, case: Doc) -> CaseState:
        """The state of a stored case."""
        at = case.get("assignment_at")
        return cls(
            status=CaseStatus(case["status"]),
            timeline_ids=frozenset(e["id"] for e in case.get("timeline") or []),
            assignment_id=case.get("assignment_id"),
            assignment_at=at if at is None or at.tzinfo else at.replace(tzinfo=UTC),
        )


KEEP = "keep"
CLEAR = "clear"
ASSIGN = "assign"


@dataclass(frozen=True)
class Decision:
    """What to do with a change: nothing (with why), or the new status and reviewer."""

    apply: bool
    reason: str = ""
    status: CaseStatus | None = None
    reviewer: str = KEEP


def skip(reason: str) -> Decision:
    """A change that changes nothing."""
    return Decision(apply=False, reason=reason)


def decide(state: CaseState, change: Change) -> Decision:
    """What a change does to a case: status only moves forward, a redelivery does nothing.

    A declined review takes the reviewer's access away and leaves the status `assigned`
    (moving back to `submitted` would move backwards): the case waits for its next reviewer.
    """
    if change.event_id in state.timeline_ids:
        return skip("already in the timeline")
    if state.status == CaseStatus.DRAFT:
        return skip("the case was never submitted")
    if state.status == CaseStatus.WITHDRAWN:
        return skip("the case was withdrawn")
    rank = RANK[state.status]
    if change.kind == TimelineKind.ASSIGNED:
        if rank > RANK[CaseStatus.ASSIGNED]:
            return skip("older than the case's status")
        if state.assignment_at is not None and change.at < state.assignment_at:
            return skip("older than the current assignment")
        return Decision(apply=True, status=CaseStatus.ASSIGNED, reviewer=ASSIGN)
    if change.kind == TimelineKind.ACCEPTED:
        if state.assignment_id is None or change.assignment_id != state.assignment_id:
            return skip("not the current assignment")
        if rank >= RANK[CaseStatus.IN_REVIEW]:
            return skip("older than the case's status")
        return Decision(apply=True, status=CaseStatus.IN_REVIEW)
    if change.kind == TimelineKind.DECLINED:
        if state.assignment_id is None or change.assignment_id != state.assignment_id:
            return skip("not the current assignment")
        return Decision(apply=True, status=state.status, reviewer=CLEAR)
    if change.kind == TimelineKind.REVIEW_COMPLETED:
        return Decision(apply=True, status=state.status)
    if change.kind == TimelineKind.REPORT_READY:
        # A corrected report is a new version: one more entry, the status stays.
        return Decision(apply=True, status=CaseStatus.REPORT_READY)
    return skip(f"{change.kind} is not an event intake applies")


def timeline_entry(
    entry_id: str, kind: TimelineKind, status: CaseStatus, at: datetime
) -> dict[str, Any]:
    """A timeline entry as stored."""
    return {"id": entry_id, "kind": kind.value, "status": status.value, "at": at}


# --- who may do what --------------------------------------------------------------------------


def owns(principal: Principal, case: Doc) -> bool:
    """The patient whose case it is, or the partner that filed it."""
    if principal.role == "patient":
        return case.get("patient_id") == principal.sub
    if principal.role == "partner":
        return principal.partner_id is not None and case.get("partner_id") == principal.partner_id
    return False


def is_current_reviewer(principal: Principal, case: Doc) -> bool:
    """The reviewer assigned to the case now, while the review is on."""
    return (
        principal.role == "reviewer"
        and case.get("reviewer_id") == principal.sub
        and case.get("status") in REVIEWER_READABLE
    )


def may_read(principal: Principal, case: Doc) -> bool:
    """Status and timeline: owners, the current reviewer, coordinators and services."""
    return (
        principal.role in ("coordinator", "service")
        or owns(principal, case)
        or is_current_reviewer(principal, case)
    )


def may_read_clinical(principal: Principal, case: Doc) -> bool:
    """Clinical content and records: owners, the current reviewer and coordinators."""
    return (
        principal.role == "coordinator"
        or owns(principal, case)
        or is_current_reviewer(principal, case)
    )


def visible_filter(principal: Principal) -> dict[str, Any]:
    """The store query selecting the cases `principal` may list."""
    if principal.role == "patient":
        return {"patient_id": principal.sub}
    if principal.role == "partner":
        return {"partner_id": principal.partner_id}
    if principal.role == "reviewer":
        return {"reviewer_id": principal.sub}
    return {}


def not_found(case_id: str) -> Problem:
    """The one answer for a case that is missing or not the caller's (existence stays hidden)."""
    return Problem(404, "case-not-found", "Case not found", f"no case {case_id} for this caller")


def check_birth_date(birth: date, today: date) -> None:
    """422 unless the birth date is plausible: not in the future, not before 1900."""
    if birth > today or birth < EARLIEST_BIRTH_DATE:
        raise Problem(
            422,
            "validation",
            "Request validation failed",
            "the birth date must be between 1900-01-01 and today",
            errors=[{"field": "body.patient.birth_date", "message": "not a plausible birth date"}],
        )


def check_consent(body: SubmitIn, now: datetime) -> None:
    """422 unless the consent covers the review and was given by now."""
    consent = body.consent
    if ConsentScope.REVIEW not in consent.scopes:
        raise Problem(
            422,
            "consent-required",
            "Consent to the review is required",
            "the consent's scopes must include 'review'",
            errors=[{"field": "body.consent.scopes", "message": "must include 'review'"}],
        )
    if consent.accepted_at > now + CONSENT_CLOCK_SKEW:
        raise Problem(
            422,
            "validation",
            "Request validation failed",
            "the consent cannot have been given in the future",
            errors=[{"field": "body.consent.accepted_at", "message": "is in the future"}],
        )


def fingerprint(body: CaseCreate) -> str:
    """A digest of a creation request, to tell a replay from a different request."""
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


# --- the service ------------------------------------------------------------------------------


@dataclass
class Upload:
    """A record as received."""

    kind: DocumentKind
    filename: str | None
    declared: str | None
    data: bytes


@dataclass
class Download:
    """A record to send back: its metadata and its bytes, chunk by chunk."""

    meta: Doc
    chunks: AsyncIterator[bytes] = field(repr=False)


class IntakeService:
    """Cases from draft to submission, and their status as the other services report it."""

    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.store = Store(runtime.db)
        self.keyring = Keyring.from_settings(settings)
        self.references = References(self.store)

    # reading

    async def _case(self, case_id: str) -> Doc | None:
        if not is_case_id(case_id):
            return None
        return await self.store.cases.find_one({"_id": case_id}, {"outbox": 0})

    async def get_case(self, principal: Principal, case_id: str) -> Doc:
        """A case `principal` may read; 404 otherwise."""
        case = await self._case(case_id)
        if case is None or not may_read(principal, case):
            raise not_found(case_id)
        return case

    async def get_clinical(self, principal: Principal, case_id: str) -> Doc:
        """A case whose clinical content `principal` may read; 404 otherwise."""
        case = await self._case(case_id)
        if case is None or not may_read_clinical(principal, case):
            raise not_found(case_id)
        return case

    async def documents_of(self, case_id: str) -> list[Doc]:
        """A case's records, oldest first."""
        cursor = self.store.documents.find({"case_id": case_id}).sort("uploaded_at", 1)
        return [d async for d in cursor]

    async def list_cases(
        self, principal: Principal, status: CaseStatus | None, limit: int, cursor: str | None
    ) -> tuple[list[Doc], str | None]:
        """A page of the cases `principal` may see, newest first, and the next page's cursor."""
        query = visible_filter(principal)
        if principal.role == "reviewer":
            readable = [s.value for s in REVIEWER_READABLE]
            if status is not None and status.value not in readable:
                return [], None
            query["status"] = status.value if status else {"$in": readable}
        elif status is not None:
            query["status"] = status.value
        if cursor is not None:
            query["_id"] = {"$lt": cursor}
        found = self.store.cases.find(
            query,
            {
                "reference": 1,
                "status": 1,
                "specialty": 1,
                "urgency": 1,
                "created_at": 1,
                "updated_at": 1,
            },
        )
        page = [d async for d in found.sort("_id", -1).limit(limit + 1)]
        more = len(page) > limit
        page = page[:limit]
        return page, (str(page[-1]["_id"]) if more else None)

    # creating

    async def create_case(
        self, principal: Principal, body: CaseCreate, idempotency_key: str | None = None
    ) -> tuple[Doc, bool]:
        """A new draft (True), or the case this caller's Idempotency-Key already made (False)."""
        if principal.role not in ("patient", "partner"):
            raise Problem(403, "forbidden", "Forbidden", "only patients and partners file cases")
        now = utcnow()
        check_birth_date(body.patient.birth_date, now.date())
        if body.partner_reference is not None and principal.role != "partner":
            raise Problem(
                422,
                "validation",
                "Request validation failed",
                "only a partner gives its own reference",
                errors=[{"field": "body.partner_reference", "message": "partners only"}],
            )
        case_id = new_case_id()
        if idempotency_key is not None:
            claimed = await self._claim_key(principal, idempotency_key, body, case_id, now)
            existing = await self._case(claimed)
            if existing is not None:
                return existing, False
            case_id = claimed  # an earlier attempt claimed the key but did not write its case
        for _ in range(3):
            doc = self._new_case(principal, body, case_id, await self.references.next(), now)
            try:
                await self.store.cases.insert_one(doc)
            except DuplicateKeyError:
                existing = await self._case(case_id)
                if existing is not None:
                    return existing, False  # a concurrent replay of the same key wrote it
                continue  # a reference clash (the unique index caught it): take another
            log.info("case drafted", case_id=case_id, role=principal.role)
            doc.pop("outbox", None)
            return doc, True
        raise RuntimeError("could not allocate a unique reference")

    async def _claim_key(
        self, principal: Principal, key: str, body: CaseCreate, case_id: str, now: datetime
    ) -> str:
        claim_id = json.dumps([principal.role, principal.sub, key])
        digest = fingerprint(body)
        try:
            await self.store.idempotency.insert_one(
                {"_id": claim_id, "case_id": case_id, "fingerprint": digest, "at": now}
            )
            return case_id
        except DuplicateKeyError:
            claim = await self.store.idempotency.find_one({"_id": claim_id})
        if claim is None:  # the claim vanished between insert and read; treat as new
            return case_id
        if claim["fingerprint"] != digest:
            raise Problem(
                422,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "this Idempotency-Key was used for a different request; use a new key",
                errors=[{"field": "header.Idempotency-Key", "message": "used for another body"}],
            )
        return str(claim["case_id"])

    def _new_case(
        self, principal: Principal, body: CaseCreate, case_id: str, reference: str, now: datetime
    ) -> Doc:
        patient = body.patient
        physician = body.physician
        return {
            "_id": case_id,
            "reference": reference,
            "status": CaseStatus.DRAFT.value,
            "patient_id": principal.sub if principal.role == "patient" else None,
            "partner_id": principal.partner_id if principal.role == "partner" else None,
            "partner_reference": body.partner_reference,
            "created_by": {"sub": principal.sub, "role": principal.role},
            "patient": {
                "given_name": patient.given_name.strip(),
                "family_name": patient.family_name.strip(),
                "birth_date": patient.birth_date.isoformat(),
                "email": patient.email,
                "phone": patient.phone,
                "preferred_language": patient.preferred_language.value,
            },
            "physician": (
                {
                    "name": physician.name.strip() if physician.name else None,
                    "institution_code": physician.institution_code,
                }
                if physician
                else None
            ),
            "specialty": body.specialty.value,
            "urgency": body.urgency.value,
            "language": patient.preferred_language.value,
            "questions": [q.value for q in body.questions],
            "clinical_summary": body.clinical_summary,
            "created_at": now,
            "updated_at": now,
            "submitted_at": None,
            "withdrawn_at": None,
            "consent": None,
            "traceparent": "",
            "reviewer_id": None,
            "assignment_id": None,
            "assignment_at": None,
            "timeline": [
                timeline_entry(f"{case_id}:created", TimelineKind.CREATED, CaseStatus.DRAFT, now)
            ],
            "outbox": [],
            "outbox_pending": 0,
        }

    # records

    async def _writable(self, principal: Principal, case_id: str) -> Doc:
        case = await self._case(case_id)
        if case is None or not owns(principal, case):
            raise not_found(case_id)
        return case

    @staticmethod
    def _require_draft(case: Doc, action: str) -> None:
        if case["status"] != CaseStatus.DRAFT.value:
            raise Problem(
                409,
                "case-not-draft",
                "The case is no longer a draft",
                f"records can only be {action} while the case is a draft; it is {case['status']}",
            )

    def check_upload(self, upload: Upload) -> tuple[ContentType, str | None]:
        """The record's format and kept file name; 413, 415 or 422 when it cannot be taken."""
        filename = check_filename(upload.filename)
        declared = declared_type(upload.declared)
        if not upload.data:
            raise Problem(
                422,
                "empty-document",
                "Empty document",
                "the file is empty",
                errors=[{"field": "body.file", "message": "is empty"}],
            )
        limit = self.settings.max_document_bytes
        if len(upload.data) > limit:
            raise Problem(
                413,
                "document-too-large",
                "Document too large",
                f"a record may be at most {limit} bytes; this one is {len(upload.data)}",
            )
        return check_type(upload.data, declared), filename

    async def add_document(
        self, principal: Principal, case_id: str, upload: Upload
    ) -> tuple[Doc, bool]:
        """Store a record on a draft: (metadata, True), or the same file already there (False)."""
        self._require_draft(await self._writable(principal, case_id), "added")
        content_type, filename = self.check_upload(upload)
        sha256 = hashlib.sha256(upload.data).hexdigest()
        doc_id = f"{case_id}:{sha256}"
        async with self.runtime.locks.hold(case_id):
            self._require_draft(await self._writable(principal, case_id), "added")
            existing = await self.store.documents.find_one({"_id": doc_id})
            if existing is not None:
                return existing, False
            held = [d async for d in self.store.documents.find({"case_id": case_id}, {"_id": 1})]
            if len(held) >= self.settings.max_documents_per_case:
                raise Problem(
                    409,
                    "too-many-documents",
                    "Too many documents",
                    f"a case holds at most {self.settings.max_documents_per_case} records",
                )
            bucket = self.store.records()
            # Bytes first, metadata last: the metadata is what makes a record exist, so an
            # interrupted upload leaves at most an orphan blob, replaced on the next attempt.
            with contextlib.suppress(NoFile):
                await bucket.delete(doc_id)
            await bucket.upload_from_stream_with_id(
                doc_id, doc_id, io.BytesIO(upload.data), metadata={"case_id": case_id}
            )
            meta = {
                "_id": doc_id,
                "case_id": case_id,
                "document_id": sha256,
                "sha256": sha256,
                "kind": upload.kind.value,
                "content_type": content_type.value,
                "size": len(upload.data),
                "filename": filename,
                "uploaded_at": utcnow(),
                "uploaded_by": {"sub": principal.sub, "role": principal.role},
            }
            await self.store.documents.insert_one(meta)
        log.info("record stored", case_id=case_id, document_id=sha256, size=len(upload.data))
        return meta, True

    async def delete_document(self, principal: Principal, case_id: str, document_id: str) -> None:
        """Remove a record from a draft."""
        async with self.runtime.locks.hold(case_id):
            self._require_draft(await self._writable(principal, case_id), "removed")
            doc_id = f"{case_id}:{document_id}"
            result = await self.store.documents.delete_one({"_id": doc_id})
            if result.deleted_count == 0:
                raise document_not_found(document_id)
            with contextlib.suppress(NoFile):
                await self.store.records().delete(doc_id)
        log.info("record removed", case_id=case_id, document_id=document_id)

    async def open_document(self, principal: Principal, case_id: str, document_id: str) -> Download:
        """A record's metadata and bytes, for a reader allowed the clinical content."""
        await self.get_clinical(principal, case_id)
        doc_id = f"{case_id}:{document_id}"
        meta = await self.store.documents.find_one({"_id": doc_id})
        if meta is None:
            raise document_not_found(document_id)
        try:
            grid_out = await self.store.records().open_download_stream(doc_id)
        except NoFile:
            raise document_not_found(document_id) from None

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in grid_out:
                yield chunk

        return Download(meta=meta, chunks=chunks())

    # submitting, withdrawing

    async def submit(self, principal: Principal, case_id: str, body: SubmitIn) -> Doc:
        """Submit a draft with the patient's consent; submitting again returns the same case."""
        async with self.runtime.locks.hold(case_id):
            case = await self._writable(principal, case_id)
            status = CaseStatus(case["status"])
            if status == CaseStatus.WITHDRAWN:
                raise Problem(
                    409, "case-withdrawn", "The case was withdrawn", "a withdrawn case stays so"
                )
            if status != CaseStatus.DRAFT:
                return case  # already submitted: same result, no second event
            now = utcnow()
            check_consent(body, now)
            documents = await self.documents_of(case_id)
            if not documents:
                raise Problem(
                    409,
                    "no-documents",
                    "No documents",
                    "upload at least one record before submitting the case",
                )
            consent = body.consent
            share = ConsentScope.SHARE_WITH_PARTNER in consent.scopes
            event_id = new_event_id()
            patient = case["patient"]
            contact = {
                "given_name": patient["given_name"],
                "family_name": patient["family_name"],
                "email": patient["email"],
                "phone": patient["phone"],
                "birth_date": patient["birth_date"],
                "preferred_language": patient["preferred_language"],
            }
            with case_span("intake.case.submit", case.get("traceparent") or "") as span:
                span.set_attribute("avis.case_id", case_id)
                traceparent = current_traceparent().get("traceparent", "")
                payload = CaseSubmitted(
                    case_id=case_id,
                    reference=case["reference"],
                    specialty=case["specialty"],
                    urgency=case["urgency"],
                    language=case["language"],
                    questions=case["questions"],
                    physician_institution=(case.get("physician") or {}).get("institution_code"),
                    # The referring partner hears of the case only if the patient agreed.
                    partner_id=case.get("partner_id") if share else None,
                    partner_reference=case.get("partner_reference") if share else None,
                    patient_id=case.get("patient_id"),
                    consent_scopes=list(dict.fromkeys(consent.scopes)),
                    document_count=len(documents),
                    submitted_at=now,
                    case_url=f"{self.settings.public_url.rstrip('/')}/v1/cases/{case_id}",
                    contact=self.keyring.seal_json(PatientContact(**contact), aad=event_id),
                )
                event = Event.new(payload, SOURCE, event_id=event_id)
            update = {
                "$set": {
                    "status": CaseStatus.SUBMITTED.value,
                    "submitted_at": now,
                    "updated_at": now,
                    "traceparent": traceparent,
                    "consent": {
                        "text_version": consent.text_version,
                        "accepted_at": consent.accepted_at,
                        "scopes": [s.value for s in dict.fromkeys(consent.scopes)],
                        "recorded_at": now,
                    },
                },
                "$push": {
                    "timeline": timeline_entry(
                        event.id, TimelineKind.SUBMITTED, CaseStatus.SUBMITTED, now
                    )
                },
            }
            async with self.runtime.relay.publishing(self.store.cases, case_id):
                await self.store.cases.update_one({"_id": case_id}, with_events(update, [event]))
        log.info("case submitted", case_id=case_id, event_id=event.id)
        return await self.get_case(principal, case_id)

    async def withdraw(self, principal: Principal, case_id: str) -> Doc:
        """Withdraw a case before its report; withdrawing again returns the same case.

        A draft nobody else has heard of is withdrawn quietly; a submitted case publishes
        `avis.case.withdrawn.v1`.
        """
        async with self.runtime.locks.hold(case_id):
            case = await self._writable(principal, case_id)
            status = CaseStatus(case["status"])
            if status == CaseStatus.WITHDRAWN:
                return case
            if status == CaseStatus.REPORT_READY:
                raise Problem(
                    409,
                    "report-ready",
                    "The report is ready",
                    "a case cannot be withdrawn once its report is ready",
                )
            now = utcnow()
            events: list[Event] = []
            entry_id = f"{case_id}:withdrawn"
            if status != CaseStatus.DRAFT:
                with case_span("intake.case.withdraw", case.get("traceparent") or "") as span:
                    span.set_attribute("avis.case_id", case_id)
                    event = Event.new(CaseWithdrawn(case_id=case_id, withdrawn_at=now), SOURCE)
                events.append(event)
                entry_id = event.id
            update = {
                "$set": {
                    "status": CaseStatus.WITHDRAWN.value,
                    "withdrawn_at": now,
                    "updated_at": now,
                },
                "$push": {
                    "timeline": timeline_entry(
                        entry_id, TimelineKind.WITHDRAWN, CaseStatus.WITHDRAWN, now
                    )
                },
            }
            async with self.runtime.relay.publishing(self.store.cases, case_id):
                await self.store.cases.update_one({"_id": case_id}, with_events(update, events))
        log.info("case withdrawn", case_id=case_id)
        return await self.get_case(principal, case_id)

    # what the other services report

    async def apply(self, case_id: str, change: Change) -> bool:
        """Apply a change reported by an event; False if it changes nothing (and why is logged)."""
        async with self.runtime.locks.hold(case_id):
            case = await self._case(case_id)
            if case is None:
                # Ours only if we made it: an event about someone else's case is not for us.
                log.info("event for a case intake does not know skipped", kind=change.kind.value)
                return False
            decision = decide(CaseState.of(case), change)
            if not decision.apply or decision.status is None:
                log.info("event changes nothing", kind=change.kind.value, reason=decision.reason)
                return False
            fields: dict[str, Any] = {"status": decision.status.value, "updated_at": utcnow()}
            if decision.reviewer == ASSIGN:
                fields |= {
                    "reviewer_id": change.reviewer_id,
                    "assignment_id": change.assignment_id,
                    "assignment_at": change.at,
                }
            elif decision.reviewer == CLEAR:
                fields |= {"reviewer_id": None, "assignment_id": None}
            entry = timeline_entry(change.event_id, change.kind, decision.status, change.at)
            await self.store.cases.update_one(
                {"_id": case_id}, {"$set": fields, "$push": {"timeline": entry}}
            )
        log.info("case updated", kind=change.kind.value, status=decision.status.value)
        return True


def document_not_found(document_id: str) -> Problem:
    """404 for a record the case does not hold."""
    return Problem(
        404, "document-not-found", "Document not found", f"the case holds no record {document_id}"
    )
