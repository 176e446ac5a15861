"""Intake's pure decisions: the case's state machine, who may do what, what a record is, the
rules of references, consent and birth dates. No I/O: everything here is a function of its
arguments, tested without a store, a broker or HTTP (tests/unit/intake)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import unicodedata
import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum

from avis.intake.models import (
    CaseCreate,
    CaseStatus,
    ContentType,
    SubmitIn,
    TimelineKind,
)
from avis.shared.case_keys import CaseKeyDestroyed
from avis.shared.events import ConsentScope
from avis.shared.problems import Problem, not_found
from avis.shared.security import Principal
from avis.shared.text import UUID_PATTERN

REFERENCE_BLOCK = 100  # references claimed at once; fixed, so blocks never overlap
CONSENT_CLOCK_SKEW = timedelta(minutes=5)
EARLIEST_BIRTH_DATE = date(1900, 1, 1)
MAX_FILENAME_CHARS = 255

# A case's status is ordered by the sequence number of the fact that set it (`seq`, stamped by
# the service that owns that part of the case's lifecycle), then by this rank, which orders the
# facts of one step (an opinion and its report share the opinion's number) and the facts
# published before sequences (number 0): see `newer`. `withdrawn` ends a case from any step.
RANK = {
    CaseStatus.DRAFT: 0,
    CaseStatus.SUBMITTED: 1,
    CaseStatus.ASSIGNED: 2,
    CaseStatus.IN_REVIEW: 3,
    CaseStatus.AWAITING_INFORMATION: 3,  # a step of the review: only numbered facts set it
    CaseStatus.REPORT_READY: 4,
}
# While the case is in one of these, its current reviewer may read it.
REVIEWER_READABLE = (
    CaseStatus.ASSIGNED,
    CaseStatus.IN_REVIEW,
    CaseStatus.AWAITING_INFORMATION,
    CaseStatus.REPORT_READY,
)

_ID_RE = re.compile(UUID_PATTERN)


# --- ids and references -----------------------------------------------------------------------


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


def document_id_of(case_id: str, document_id: str) -> str:
    """A record's `_id`: the same file twice on a case is one record."""
    return f"{case_id}:{document_id}"


# What the keyed digest of a record's bytes, its document id, is derived for (`Keyring.derive`).
DOCUMENT_ID_PURPOSE = "avis-intake:document-id"


def document_id(key: bytes, case_id: str, data: bytes) -> str:
    """A record's document id on its case: HMAC-SHA256 of its bytes under a key derived for
    this purpose, in hex. A plain hash kept in the store would let anyone holding a copy confirm
    that a file they have is this patient's; this one also differs from case to case."""
    return hmac.new(key, case_id.encode() + b"\0" + data, hashlib.sha256).hexdigest()


def case_aad(case_id: str) -> str:
    """What a case's sealed content (identity, physician's name, summary) is bound to."""
    return f"intake:case:{case_id}"


def record_aad(record_id: str) -> str:
    """What a record's sealed details (file name, SHA-256) are bound to: where they are kept."""
    return f"intake:record:{record_id}"


def chunk_aad(chunk_id: str) -> str:
    """What a sealed piece of a record's bytes is bound to: its place, so none can be moved."""
    return f"intake:record-chunk:{chunk_id}"


# What the keyed digest of a creation request is derived for (`Keyring.derive`).
FINGERPRINT_PURPOSE = "avis-intake:request-fingerprint"


def fingerprint(kid: str, key: bytes, body: CaseCreate) -> str:
    """A keyed digest of a creation request (HMAC-SHA256, after the id of the key it was
    derived from), to tell a replay from a different request: a plain hash of a body of health
    data would let anyone who guesses the body confirm it from the store."""
    digest = hmac.new(key, body.model_dump_json().encode(), hashlib.sha256).hexdigest()
    return f"{kid}:{digest}"


def fingerprint_key_id(stored: str) -> str | None:
    """The key id a stored fingerprint was made with (None: not a keyed fingerprint)."""
    kid, sep, _ = stored.rpartition(":")
    return kid if sep else None


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


def check_upload(
    data: bytes, filename: str | None, declared: str | None, max_bytes: int
) -> tuple[ContentType, str | None]:
    """The record's format and kept file name; 413, 415 or 422 when it cannot be taken."""
    kept = check_filename(filename)
    declared_as = declared_type(declared)
    if not data:
        raise Problem(
            422,
            "empty-document",
            "Empty document",
            "the file is empty",
            errors=[{"field": "body.file", "message": "is empty"}],
        )
    if len(data) > max_bytes:
        raise Problem(
            413,
            "document-too-large",
            "Document too large",
            f"a record may be at most {max_bytes} bytes; this one is {len(data)}",
        )
    return check_type(data, declared_as), kept


# --- status and timeline ----------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What an event from another service says happened to a case (`seq`: the case's sequence
    number the event carries, 0 for one published before sequences)."""

    kind: TimelineKind
    event_id: str
    at: datetime
    assignment_id: str | None = None
    reviewer_id: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class CaseState:
    """The part of a case that decides what an event does to it (`seq`: the sequence number of
    the fact that set its status)."""

    status: CaseStatus
    timeline_ids: frozenset[str] = frozenset()
    assignment_id: str | None = None
    assignment_at: datetime | None = None
    seq: int = 0


class ReviewerChange(StrEnum):
    """What a change does to the case's current reviewer."""

    KEEP = "keep"
    CLEAR = "clear"
    ASSIGN = "assign"


KEEP, CLEAR, ASSIGN = ReviewerChange.KEEP, ReviewerChange.CLEAR, ReviewerChange.ASSIGN


@dataclass(frozen=True)
class Decision:
    """What to do with a change: nothing (with why), or the new status and reviewer (`seq`: the
    sequence number to keep with the status, None: the status was not set by this change)."""

    apply: bool
    reason: str = ""
    status: CaseStatus | None = None
    reviewer: ReviewerChange = KEEP
    seq: int | None = None


def skip(reason: str) -> Decision:
    """A change that changes nothing."""
    return Decision(apply=False, reason=reason)


def newer(state: CaseState, change: Change, status: CaseStatus) -> bool | None:
    """Whether `change`, which would set `status`, comes after the fact that set the case's
    status (None: the same place).

    A numbered fact is ordered by its sequence number first, so a newer one may move a case
    back (a case sent back to review goes from `report_ready` to `in_review`) and an older one
    arriving late changes nothing; the rank decides between the facts of one step (an opinion
    and its report). A fact without a number (0: published before sequences, or by a copy of
    its producer not yet upgraded) is ordered by the rank alone, as before sequences: it only
    moves a case forward, so services may be upgraded in any order."""
    if change.seq == 0:
        mine, theirs = (0, RANK[status]), (0, RANK[state.status])
    else:
        mine, theirs = (change.seq, RANK[status]), (state.seq, RANK[state.status])
    return None if mine == theirs else mine > theirs


def moved(state: CaseState, change: Change, status: CaseStatus) -> Decision:
    """The change sets `status`; the newest sequence number seen is kept with it."""
    return Decision(apply=True, status=status, seq=max(state.seq, change.seq))


def decide(state: CaseState, change: Change) -> Decision:
    """What a change does to a case: the status follows the newest fact (`newer`), a
    redelivery does nothing.

    A declined review takes the reviewer's access away and leaves the status `assigned`: the
    case waits for its next reviewer. A report older than the case's status (the case went back
    to review since) is one more timeline entry, and the status stays.
    """
    if change.event_id in state.timeline_ids:
        return skip("already in the timeline")
    if state.status == CaseStatus.DRAFT:
        return skip("the case was never submitted")
    if state.status == CaseStatus.WITHDRAWN:
        return skip("the case was withdrawn")
    if change.kind == TimelineKind.ASSIGNED:
        after = newer(state, change, CaseStatus.ASSIGNED)
        if after is False:
            return skip("older than the case's status")
        if after is None and state.assignment_at is not None and change.at < state.assignment_at:
            return skip("older than the current assignment")
        return replace(moved(state, change, CaseStatus.ASSIGNED), reviewer=ASSIGN)
    if change.kind == TimelineKind.ACCEPTED:
        if state.assignment_id is None or change.assignment_id != state.assignment_id:
            return skip("not the current assignment")
        if not newer(state, change, CaseStatus.IN_REVIEW):
            return skip("older than the case's status")
        return moved(state, change, CaseStatus.IN_REVIEW)
    if change.kind == TimelineKind.DECLINED:
        if state.assignment_id is None or change.assignment_id != state.assignment_id:
            return skip("not the current assignment")
        return Decision(apply=True, status=state.status, reviewer=CLEAR)
    if change.kind in (
        TimelineKind.REVIEW_COMPLETED,
        TimelineKind.SECOND_READING,
        TimelineKind.SECOND_READING_AGREED,
        TimelineKind.TRANSLATION_QUEUED,
        TimelineKind.TRANSLATION_DONE,
        TimelineKind.PHYSICIAN_COPY_SENT,
    ):
        return Decision(apply=True, status=state.status)
    if change.kind == TimelineKind.INFORMATION_REQUESTED:
        if state.assignment_id is None or change.assignment_id != state.assignment_id:
            return skip("not the current assignment")
        if not newer(state, change, CaseStatus.AWAITING_INFORMATION):
            return Decision(apply=True, status=state.status)  # the request is kept all the same
        return moved(state, change, CaseStatus.AWAITING_INFORMATION)
    if change.kind == TimelineKind.REVIEW_RESUMED:
        # Back to review once the answer came or the request expired: the request closes.
        if not newer(state, change, CaseStatus.IN_REVIEW):
            return Decision(apply=True, status=state.status)
        return moved(state, change, CaseStatus.IN_REVIEW)
    if change.kind == TimelineKind.FOLLOW_UP_ASKED:
        # A follow-up question after the report: the case goes back to review.
        if not newer(state, change, CaseStatus.IN_REVIEW):
            return Decision(apply=True, status=state.status)
        return moved(state, change, CaseStatus.IN_REVIEW)
    if change.kind == TimelineKind.FOLLOW_UP_ANSWERED:
        # The answer comes as a report version, whose `report-ready` sets the status.
        return Decision(apply=True, status=state.status)
    if change.kind == TimelineKind.REPORT_READY:
        # A corrected report is a new version: one more entry, the status stays.
        if newer(state, change, CaseStatus.REPORT_READY) is False:
            return Decision(apply=True, status=state.status)
        return moved(state, change, CaseStatus.REPORT_READY)
    return skip(f"{change.kind} is not an event intake applies")


def check_submittable(status: CaseStatus) -> bool:
    """Whether a submission writes anything: True for a draft, False when already submitted
    (the same case comes back, no second event); 409 for a withdrawn case."""
    if status == CaseStatus.WITHDRAWN:
        raise Problem(409, "case-withdrawn", "The case was withdrawn", "a withdrawn case stays so")
    return status == CaseStatus.DRAFT


def check_withdrawable(status: CaseStatus) -> bool:
    """Whether a withdrawal writes anything (False: already withdrawn); 409 once reported."""
    if status == CaseStatus.REPORT_READY:
        raise Problem(
            409,
            "report-ready",
            "The report is ready",
            "a case cannot be withdrawn once its report is ready",
        )
    return status != CaseStatus.WITHDRAWN


def check_draft(status: CaseStatus, action: str, *, request_open: bool = False) -> None:
    """409 unless the case is a draft: records are only `action` (added, removed) then, and
    added while a request for more information is open (`request_open`)."""
    if status != CaseStatus.DRAFT and not (request_open and action == "added"):
        raise Problem(
            409,
            "case-not-draft",
            "The case is no longer a draft",
            f"records can only be {action} while the case is a draft; it is {status}",
        )


# --- who may do what --------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """What the access policy looks at in a case: whose it is and who reviews it now."""

    status: CaseStatus
    patient_id: str | None = None
    partner_id: str | None = None
    reviewer_id: str | None = None
    # The scopes the patient consented to at submission; None before (nothing consented yet).
    consent_scopes: frozenset[ConsentScope] | None = None
    # The current reviewer's access has lapsed (`reviewer_access_lapsed`).
    reviewer_lapsed: bool = False


def reviewer_access_lapsed(
    *, last_active: datetime | None, request_open: bool, at: datetime, window: timedelta
) -> bool:
    """Whether a reviewer's access to a case has lapsed: `window` after their last report or
    answer (`last_active`; None: none yet, the review is on), unless a follow-up question or a
    request for more information of theirs is open (`request_open`: nothing opens one yet)."""
    if request_open or last_active is None:
        return False
    return at >= last_active + window


def information_aad(case_id: str, request_id: str, part: str) -> str:
    """What a request for more information's question or answer (`part`) is bound to."""
    return f"intake:information:{case_id}:{request_id}:{part}"


def check_answerable(*, found: bool, open_: bool, principal: Principal) -> None:
    """Only the patient or the filing partner answers (403); 404 for a request the case never
    had; 409 once it is answered or expired."""
    if principal.role not in ("patient", "partner"):
        raise Problem(
            403, "forbidden", "Forbidden", "only the patient or the filing partner answers"
        )
    if not found:
        raise not_found("information request", "information-request-not-found")
    if not open_:
        raise Problem(
            409,
            "information-request-closed",
            "The request is not open",
            "this request for more information was already answered, or expired; the review "
            "went on",
        )


def check_erasure_requester(principal: Principal) -> None:
    """Only the patient asks for their own data's erasure (403 for the partner that filed)."""
    if principal.role != "patient":
        raise Problem(403, "forbidden", "Forbidden", "only the patient may ask for erasure")


def needs_keying(*, key_ref: str | None, keying: bool, erased: bool) -> bool:
    """Whether the migration to per-case keys has work on a case: one filed before them (no
    key), or one it stopped part way (keyed, not yet all sealed under its key); an erased case
    has nothing left to seal."""
    return not erased and (key_ref is None or keying)


def hold_aad(case_id: str) -> str:
    """What a legal hold's sealed reason is bound to."""
    return f"intake:hold:{case_id}"


def erased() -> Problem:
    """The 410 of a case whose data was erased: its key is destroyed, nothing opens."""
    return CaseKeyDestroyed()


def check_not_erased(erased_at: datetime | None) -> None:
    """410 once the case is erased."""
    if erased_at is not None:
        raise erased()


@dataclass(frozen=True)
class ErasureDecision:
    """What an erasure request does now: erase, wait for a hold, or nothing (done before)."""

    erase: bool
    deferred: bool


def decide_erasure(*, erased: bool, held: bool) -> ErasureDecision:
    """An erasure goes ahead unless the case is erased already or under a legal hold.

    French law keeps a health establishment's medical file 20 years (Code de la santé
    publique, R1112-7) and the GDPR lets such a duty override erasure (article 17(3)(b) and
    (c)). Avis is not the establishment that keeps the patient's file, so the patient's request
    wins by default; where a duty to keep applies (a dispute, an establishment's file), a
    coordinator sets a legal hold with its reason, and the hold wins while it stands: the
    request is kept and carried out when the hold is lifted."""
    if erased:
        return ErasureDecision(erase=False, deferred=False)
    return ErasureDecision(erase=not held, deferred=held)


class AfterRestore(StrEnum):
    """What the reconciliation after a restore does with one case (`after_restore`)."""

    KEEP = "keep"
    ERASE = "erase"  # erased after the copy was taken: its skeleton is made again
    DESTROY = "destroy"  # erased: its key is destroyed again, in case it came back


def after_restore(*, erased: bool, key_ref: str | None, key_exists: bool) -> AfterRestore:
    """A case whose skeleton says it is erased while its key exists has the key destroyed
    again (a key service restored from a copy taken before the erasure gave it back); a case
    the copy holds whole whose key the key service no longer gives was erased after the copy
    was taken, and is left as its erasure left it; any other case is kept."""
    if key_ref is None:
        return AfterRestore.KEEP
    if erased:
        return AfterRestore.DESTROY if key_exists else AfterRestore.KEEP
    return AfterRestore.KEEP if key_exists else AfterRestore.ERASE


def owns(principal: Principal, case: Access) -> bool:
    """The patient whose case it is, or the partner that filed it."""
    if principal.role == "patient":
        return case.patient_id == principal.sub
    if principal.role == "partner":
        return principal.partner_id is not None and case.partner_id == principal.partner_id
    return False


def is_current_reviewer(principal: Principal, case: Access) -> bool:
    """The reviewer assigned to the case now, while the review is on and until their access
    lapses."""
    return (
        principal.role == "reviewer"
        and case.reviewer_id == principal.sub
        and case.status in REVIEWER_READABLE
        and not case.reviewer_lapsed
    )


def partner_sees(case: Access) -> bool:
    """Whether the filing partner sees the clinical content and the timeline: while the case is
    its own unsubmitted draft (it wrote it; nothing is consented yet), then only with the
    patient's consent to share."""
    return case.consent_scopes is None or ConsentScope.SHARE_WITH_PARTNER in case.consent_scopes


def sees_progress(principal: Principal, case: Access) -> bool:
    """Whether a caller who may read the case sees its timeline, questions and records' metadata:
    everyone but a filing partner the patient did not consent to share with."""
    return principal.role != "partner" or partner_sees(case)


def may_read(principal: Principal, case: Access) -> bool:
    """Status and timeline: owners, the current reviewer, coordinators and services."""
    return (
        principal.role in ("coordinator", "service")
        or owns(principal, case)
        or is_current_reviewer(principal, case)
    )


def may_read_clinical(principal: Principal, case: Access) -> bool:
    """Clinical content and records: the patient, the filing partner (as `partner_sees`), the
    current reviewer and coordinators."""
    return (
        principal.role == "coordinator"
        or (owns(principal, case) and sees_progress(principal, case))
        or is_current_reviewer(principal, case)
    )


# --- claiming a partner-filed case ------------------------------------------------------------

# What the keyed digest of a claim secret is derived for (`Keyring.derive`).
CLAIM_PURPOSE = "avis-intake:claim-secret"


def new_claim_secret() -> str:
    """A fresh one-time claim secret (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def claim_digest(key: bytes, case_id: str, secret: str) -> str:
    """The keyed digest kept instead of a claim secret (HMAC-SHA256, bound to the case)."""
    message = f"{case_id}:{secret}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def claim_matches(key: bytes, case_id: str, secret: str, digest: str | None) -> bool:
    """Whether `secret` is the case's claim secret, compared in constant time."""
    if digest is None:
        return False
    return hmac.compare_digest(claim_digest(key, case_id, secret), digest)


def needs_claim(patient_id: str | None) -> bool:
    """Whether a case being submitted waits for its patient to claim it: one a partner filed,
    which has no patient yet."""
    return patient_id is None


def check_claimable(*, matches: bool, patient_id: str | None) -> None:
    """404 for a wrong secret (as for a case that does not exist: no oracle); 409 once the case
    has its patient."""
    if not matches:
        raise not_found("case", "case-not-found")
    if patient_id is not None:
        raise Problem(409, "already-claimed", "Already claimed", "this case was claimed already")


@dataclass(frozen=True)
class Scope:
    """Which cases a caller may list: those whose `field` equals `value` (no field: all), in
    `statuses` (None: any)."""

    field: str | None = None
    value: str | None = None
    statuses: tuple[CaseStatus, ...] | None = None


def listing_scope(principal: Principal, status: CaseStatus | None) -> Scope | None:
    """The cases `principal` may list, narrowed to `status`; None when that leaves nothing."""
    wanted = (status,) if status is not None else None
    if principal.role == "patient":
        return Scope("patient_id", principal.sub, wanted)
    if principal.role == "partner":
        return Scope("partner_id", principal.partner_id, wanted)
    if principal.role == "reviewer":
        if status is not None and status not in REVIEWER_READABLE:
            return None
        return Scope("reviewer_id", principal.sub, wanted or REVIEWER_READABLE)
    return Scope(statuses=wanted)


def may_file(principal: Principal, partner_reference: str | None) -> None:
    """403 unless a patient or a partner files the case; 422 if a patient gives a partner's
    reference."""
    if principal.role not in ("patient", "partner"):
        raise Problem(403, "forbidden", "Forbidden", "only patients and partners file cases")
    if partner_reference is not None and principal.role != "partner":
        raise Problem(
            422,
            "validation",
            "Request validation failed",
            "only a partner gives its own reference",
            errors=[{"field": "body.partner_reference", "message": "partners only"}],
        )


def shared_with_partner(scopes: list[ConsentScope]) -> bool:
    """Whether the referring partner hears of the case: only if the patient agreed."""
    return ConsentScope.SHARE_WITH_PARTNER in scopes


# --- answers ----------------------------------------------------------------------------------


def unsupported(detail: str) -> Problem:
    """A 415 for a record in a format intake does not take."""
    return Problem(415, "unsupported-document-type", "Unsupported document type", detail)


def age_on(birth: date, today: date) -> int:
    """Age in whole years on `today`."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


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


def check_physician_consent(scopes: list[ConsentScope], *, has_email: bool) -> None:
    """422 unless the physician's email and the consent to send them the report come together:
    an email the patient did not consent to use is not kept for nothing, and the consent
    without an address cannot be honoured."""
    share = ConsentScope.SHARE_WITH_PHYSICIAN in scopes
    if share and not has_email:
        raise Problem(
            422,
            "physician-contact-required",
            "The physician's email is required",
            "'share_with_physician' needs the treating physician's email in the draft "
            "(physician.email)",
            errors=[{"field": "body.consent.scopes", "message": "no physician email to share"}],
        )
    if has_email and not share:
        raise Problem(
            422,
            "physician-consent-required",
            "Consent to share with the physician is required",
            "the draft gives the treating physician's email: the consent's scopes must include "
            "'share_with_physician' (or the draft must leave the email out)",
            errors=[
                {"field": "body.consent.scopes", "message": "must include 'share_with_physician'"}
            ],
        )


def shared_with_physician(scopes: list[ConsentScope]) -> bool:
    """Whether the treating physician receives the report: only if the patient agreed."""
    return ConsentScope.SHARE_WITH_PHYSICIAN in scopes


def published_scopes(scopes: list[ConsentScope]) -> list[str]:
    """The scopes the submission event names: all but the physician's, which its sealed
    `physician` field tells, and the international review's, which its own flag tells (released
    readers of the event know no such values)."""
    told_apart = (ConsentScope.SHARE_WITH_PHYSICIAN, ConsentScope.INTERNATIONAL_REVIEW)
    return [s.value for s in scopes if s not in told_apart]


def accepts_international_review(scopes: list[ConsentScope]) -> bool:
    """Whether the patient accepted a specialist who does not read their language (through a
    translator): only with the consent's own scope, never by default."""
    return ConsentScope.INTERNATIONAL_REVIEW in scopes


def check_documents(count: int, *, at_most: int | None = None) -> None:
    """409 if a case to submit holds no record, or one taking a record already holds `at_most`."""
    if at_most is None and count == 0:
        raise Problem(
            409,
            "no-documents",
            "No documents",
            "upload at least one record before submitting the case",
        )
    if at_most is not None and count >= at_most:
        raise Problem(
            409,
            "too-many-documents",
            "Too many documents",
            f"a case holds at most {at_most} records",
        )


# The roles that may ever read a case's clinical content (others: 403).
CLINICAL_ROLES = ("patient", "partner", "reviewer", "coordinator")
# The refusals of a read that the access trail records (of a case that exists).
AUDITED_REFUSALS = frozenset({403, 404, 428})
# Each action in plain words: done, and tried (a refusal).
ACTIONS = {
    "case.read": ("opened the case's status", "open the case's status"),
    "clinical.read": ("read the clinical content", "read the clinical content"),
    "document.read": ("downloaded a record", "download a record"),
    "case.create": ("drafted the case", "draft the case"),
    "document.add": ("added a record", "add a record"),
    "document.delete": ("removed a record", "remove a record"),
    "case.submit": ("submitted the case", "submit the case"),
    "case.withdraw": ("withdrew the case", "withdraw the case"),
    "case.claim": ("claimed the case", "claim the case"),
    "case.erasure-request": ("asked for the case's erasure", "ask for the case's erasure"),
    "case.erase": ("erased the case's data", "erase the case's data"),
    "case.hold": ("put the case under a legal hold", "put the case under a legal hold"),
    "case.release": ("lifted the case's legal hold", "lift the case's legal hold"),
    "information.answer": (
        "answered the specialist's request for more information",
        "answer the specialist's request for more information",
    ),
}


# A page that polls a case's status (the timeline every few seconds) is one access, not one a
# poll: the same status read by the same person within this window of the last entry is that
# entry. Clinical reads, downloads and every write are each recorded.
STATUS_READ_FOLD = timedelta(minutes=15)


def fold_window(action: str) -> timedelta | None:
    """How long a repeat of `action` by the same person counts as the last entry (None: never)."""
    return STATUS_READ_FOLD if action == "case.read" else None


def check_clinical_role(principal: Principal) -> None:
    """403 for a role that never reads clinical content (a service's machine)."""
    if principal.role not in CLINICAL_ROLES:
        raise Problem(
            403,
            "forbidden",
            "Forbidden",
            f"role {principal.role} may not do this; allowed: {', '.join(CLINICAL_ROLES)}",
        )


def may_read_trail(principal: Principal, case: Access) -> bool:
    """Who reads a case's access trail: its patient and coordinators."""
    return principal.role == "coordinator" or (
        principal.role == "patient" and owns(principal, case)
    )
