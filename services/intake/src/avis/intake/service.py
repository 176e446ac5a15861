"""Intake's use cases: cases from draft to submission, and their status as the other services
report it. Each one reads through the store, decides with `rules`, writes through the store and
publishes through the emitter; none holds HTTP or Kafka details.

Writes follow the store contract (DESIGN.md section 4): a case is written by one writer at a
time (`locks.hold(emitter.lock(case_id))`, the key under which the outbox relay drains the
case's events too, so neither rewrites the other's change), a state change and its events are
one write, and uniqueness is claimed by inserting a natural `_id`. Other locks are named by
`lock_key`. Nothing identifying or clinical is logged, put in a span
or sent in clear: the patient's contact travels sealed under the event id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from avis.intake import rules
from avis.intake.models import (
    CaseCreate,
    CasePage,
    CaseStatus,
    CaseView,
    ClinicalView,
    DocumentKind,
    DocumentView,
    InformationAnswerIn,
    InformationRequestView,
    SubmitIn,
    TimelineKind,
)
from avis.intake.rules import ASSIGN, CLEAR, Access, Change
from avis.intake.store import (
    Actor,
    Case,
    CaseContent,
    CurrentReviewer,
    IdempotencyClaim,
    ListedPage,
    Record,
    RecordDetails,
    Store,
    StoredClaim,
    StoredConsent,
    StoredEntry,
    StoredPatient,
    StoredPhysician,
    StoredRequest,
    list_key,
)
from avis.shared.access_log import (
    AccessLog,
    TrailPage,
    TrailWriter,
    check_reason,
    reasons_ring,
)
from avis.shared.case_keys import CaseKeys
from avis.shared.clock import now
from avis.shared.emit import Emitter
from avis.shared.envelope import Event, PoisonMessage
from avis.shared.events import (
    CaseClaimed,
    CaseSubmitted,
    CaseSummary,
    CaseWithdrawn,
    ClaimSecret,
    ConsentScope,
    InformationProvided,
    InformationQuestion,
    InformationRequested,
    PatientContact,
    PhysicianContact,
    ReviewResumed,
    SubmittedScope,
)
from avis.shared.mongo import AggregateLocks, lock_key
from avis.shared.problems import Problem, not_found
from avis.shared.sealing import Keyring, Sealed
from avis.shared.security import Principal

SOURCE = "/avis/intake"
# The 404 slugs of a case or record that is missing or not the caller's (existence stays hidden).
CASE_NOT_FOUND = "case-not-found"
DOCUMENT_NOT_FOUND = "document-not-found"

log = structlog.get_logger("avis.intake")


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
            year = now().year
            if year != self._year or not self._numbers:
                block = await self._claim(year)
                self._year = year
                self._numbers = list(reversed(rules.block_range(block)))
            return rules.format_reference(year, self._numbers.pop())

    async def _claim(self, year: int) -> int:
        last = await self._store.last_refblock(year)
        block = 0 if last is None else last + 1
        while not await self._store.claim_refblock(year, block, now()):
            block += 1
        return block


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

    meta: DocumentView
    chunks: AsyncIterator[bytes] = field(repr=False)


@dataclass(frozen=True)
class Limits:
    """How much a case may hold."""

    max_document_bytes: int
    max_documents_per_case: int
    # How long an Idempotency-Key is kept (then purged, avis.shared.retention).
    idempotency_key: timedelta = timedelta(days=7)


@dataclass
class Read:
    """A read the trail records once it ends: the ring of the case it read, when it has it."""

    ring: Keyring | None = None


class Auditor(TrailWriter):
    """Writes intake's access trail (`avis.shared.access_log.TrailWriter`): one entry per read
    or write of a case's health data by a person, and the refusals (403, 404, 428) of reads of
    a case that exists. A write appends under the case's lock, which it holds already
    (`locked`); a read under the trail's own lock, so it never waits for a write at another
    copy."""

    def __init__(self, *, store: Store, locks: AggregateLocks, keyring: Keyring) -> None:
        super().__init__(append=store.audit, locks=locks, keyring=keyring, fold=rules.fold_window)
        self.store = store

    @asynccontextmanager
    async def reading(
        self,
        principal: Principal,
        case_id: str,
        action: str,
        *,
        target: str | None = None,
        reason: str | None = None,
    ) -> AsyncIterator[Read]:
        """Record the read in the block: allowed when it ends, refused when it raises one of
        `rules.AUDITED_REFUSALS` about a case that exists (no trail for made-up ids). The block
        gives the case's ring (`Read.ring`), which seals the reason under the case's key."""
        read = Read()
        try:
            yield read
        except Problem as problem:
            if problem.status in rules.AUDITED_REFUSALS and await self.store.case_exists(case_id):
                refused = problem.status
                await self.record(principal, case_id, action, target=target, refused=refused)
            raise
        given = None if reason is None else check_reason(principal, reason)
        await self.record(principal, case_id, action, target=target, reason=given, ring=read.ring)


def new_claim(keyring: Keyring, case: Case) -> tuple[str | None, StoredClaim | None]:
    """A case without a patient (a partner's): a one-time claim secret, to travel sealed to the
    patient's first email, and its keyed digest, the only trace of it intake keeps."""
    if not rules.needs_claim(case.patient_id):
        return None, None
    secret = rules.new_claim_secret()
    kid, key = keyring.derive(rules.CLAIM_PURPOSE)
    return secret, StoredClaim(kid=kid, digest=rules.claim_digest(key, case.id, secret))


def opened(keyring: Keyring, case: Case) -> CaseContent:
    """A case's sealed content, opened (in clear for a case stored before sealing)."""
    if case.content is None:
        return case.opened(None)
    return case.opened(keyring.open_model(case.content, rules.case_aad(case.id), CaseContent))


def details_of(keyring: Keyring, record: Record) -> RecordDetails:
    """A record's sealed details, opened (those of a record stored before sealing are in
    clear)."""
    if record.details is None:
        return RecordDetails(filename=record.filename, sha256=record.sha256 or "")
    return keyring.open_model(record.details, rules.record_aad(record.id), RecordDetails)


def shown(keyring: Keyring, record: Record, *, with_filename: bool = True) -> DocumentView:
    """A record's metadata as the API shows it, its sealed details opened."""
    return record.view(details_of(keyring, record), with_filename=with_filename)


def document_ids(keyring: Keyring, case_id: str, data: bytes) -> list[str]:
    """The document ids `data` has on a case under each key of the ring, the current key's
    first (a file stored under an earlier key is still the same file)."""
    ids = []
    for kid in keyring.kids:
        _, key = keyring.derive(rules.DOCUMENT_ID_PURPOSE, kid)
        ids.append(rules.document_id(key, case_id, data))
    return ids


def fingerprint(keyring: Keyring, body: CaseCreate, kid: str | None = None) -> str:
    """A creation request's keyed fingerprint, under key `kid` (the sealing key by default; a
    key rotated out of the keyring makes none that matches)."""
    try:
        kid, key = keyring.derive(rules.FINGERPRINT_PURPOSE, kid)
    except KeyError:
        return ""
    return rules.fingerprint(kid, key, body)


class IntakeService:
    """Cases from draft to submission, and their status as the other services report it."""

    def __init__(
        self,
        *,
        store: Store,
        locks: AggregateLocks,
        emitter: Emitter,
        keys: CaseKeys,
        limits: Limits,
        public_url: str,
        reviewer_access: timedelta = timedelta(days=30),
    ) -> None:
        self.store = store
        self.locks = locks
        self.emitter = emitter
        # Each case's data under its own key; the service's keyring for what is no case's.
        self.keys = keys
        self.keyring = keyring = keys.keyring
        self.limits = limits
        self.public_url = public_url.rstrip("/")
        # How long a reviewer keeps access after their last report.
        self.reviewer_access = reviewer_access
        self.references = References(store)
        self.auditor = Auditor(store=store, locks=locks, keyring=keyring)

    # reading

    def _access(self, case: Case) -> Access:
        return case.access(now(), self.reviewer_access)

    async def case_or_none(self, case_id: str) -> Case | None:
        """The stored case of `case_id` (None for an id that is no case's, or an unknown one)."""
        return await self.store.case(case_id) if rules.is_case_id(case_id) else None

    async def _readable(self, principal: Principal, case_id: str, *, clinical: bool) -> Case:
        case = await self.case_or_none(case_id)
        allowed = rules.may_read_clinical if clinical else rules.may_read
        if case is None or not allowed(principal, self._access(case)):
            raise not_found("case", CASE_NOT_FOUND)
        return case

    async def writable(self, principal: Principal, case_id: str, *, erased: bool = False) -> Case:
        """A case `principal` owns (404 otherwise); 410 once erased, unless `erased`."""
        case = await self.case_or_none(case_id)
        if case is None or not rules.owns(principal, self._access(case)):
            raise not_found("case", CASE_NOT_FOUND)
        if not erased:
            rules.check_not_erased(case.erased_at)
        return case

    async def get_case(self, *, principal: Principal, case_id: str) -> CaseView:
        """A case `principal` may read (file names only for readers of the clinical content)."""
        async with self.auditor.reading(principal, case_id, "case.read"):
            case = await self._readable(principal, case_id, clinical=False)
        return await self.view(case, principal)

    async def view(
        self, case: Case, principal: Principal, records: list[Record] | None = None
    ) -> CaseView:
        """The case as `principal` sees it (file names for readers of the clinical content; the
        timeline, questions and records as `rules.sees_progress`)."""
        if records is None:
            records = await self.store.records_of(case)
        names = rules.may_read_clinical(principal, self._access(case))
        ring = await self.keys.ring(case.key_ref) if records else self.keyring
        return case.view(
            [shown(ring, r, with_filename=names) for r in records],
            with_progress=rules.sees_progress(principal, self._access(case)),
        )

    async def _clinical(self, principal: Principal, case_id: str, reason: str | None) -> Case:
        """A case whose clinical content `principal` may read (403 for a role that never does);
        a coordinator gives a reason (428 without one)."""
        rules.check_clinical_role(principal)
        check_reason(principal, reason)
        case = await self._readable(principal, case_id, clinical=True)
        rules.check_not_erased(case.erased_at)
        return case

    async def get_clinical(
        self, *, principal: Principal, case_id: str, reason: str | None = None
    ) -> ClinicalView:
        """The clinical content of a case; reviewers do not get the patient's identity, and
        coordinators say why they read it (`reason`)."""
        async with self.auditor.reading(principal, case_id, "clinical.read", reason=reason) as read:
            case = await self._clinical(principal, case_id, reason)
            read.ring = ring = await self.keys.ring(case.key_ref)
        documents = [shown(ring, r) for r in await self.store.records_of(case)]
        content = opened(ring, case)
        with_patient = principal.role != "reviewer"
        requests = [opened_request(ring, case.id, r) for r in case.requests]
        return case.clinical_view(
            documents, content, today=now().date(), with_patient=with_patient, requests=requests
        )

    async def list_cases(
        self,
        *,
        principal: Principal,
        status: CaseStatus | None = None,
        cursor: str | None = None,
        limit: int,
    ) -> CasePage:
        """A page of the cases `principal` may see, newest first."""
        scope = rules.listing_scope(principal, status)
        if scope is None:
            return ListedPage([], [], None).view(limit)
        before = int(cursor) if cursor is not None else None  # a position (the API checks)
        page = await self.store.cases_page(scope, before, limit + 1)
        return page.view(limit)

    async def access_log(
        self, *, principal: Principal, case_id: str, cursor: str | None = None, limit: int
    ) -> AccessLog:
        """A page of a case's access trail, oldest first, for its patient and coordinators."""
        page = await self.trail(principal=principal, case_id=case_id, cursor=cursor, limit=limit)
        return page.view(principal, await reasons_ring(self.keys, page), limit)

    async def trail(
        self, *, principal: Principal, case_id: str, cursor: str | None = None, limit: int
    ) -> TrailPage:
        """The stored entries behind `access_log` (and the coordinators' FHIR export)."""
        case = await self.case_or_none(case_id)
        if case is None or not rules.may_read_trail(principal, self._access(case)):
            raise not_found("case", CASE_NOT_FOUND)
        after = int(cursor) if cursor is not None else 0  # a position (the API checks)
        return await self.store.trail_page(case_id, after, limit + 1)

    # creating

    async def create_case(
        self, *, principal: Principal, body: CaseCreate, idempotency_key: str | None = None
    ) -> tuple[CaseView, bool]:
        """A new draft (True), or the case this caller's Idempotency-Key already made (False)."""
        rules.may_file(principal, body.partner_reference)
        at = now()
        rules.check_birth_date(body.patient.birth_date, at.date())
        case_id = rules.new_case_id()
        if idempotency_key is not None:
            claimed = await self._claim_key(principal, idempotency_key, body, case_id, at)
            existing = await self.case_or_none(claimed)
            if existing is not None:
                return await self.view(existing, principal), False
            case_id = claimed  # an earlier attempt claimed the key but did not write its case
        # The lists learn of the case before it exists: an entry without its case is skipped
        # when read, a case missing from its lists would never be seen.
        await asyncio.gather(*(self._join(key, case_id) for key in lists_of(principal)))
        key_ref = await self.keys.create(case_id)
        ring = await self.keys.ring(key_ref)
        for _ in range(3):
            reference = await self.references.next()
            case = new_case(ring, principal, body, case_id, reference, at, key_ref)
            if await self.store.insert_case(case):
                log.info("case drafted", case_id=case_id, role=principal.role)
                await self.auditor.record(principal, case_id, "case.create")
                return case.view([]), True
            existing = await self.case_or_none(case_id)
            if existing is not None:  # a concurrent replay of the key: its key is not needed
                await self.keys.destroy(key_ref)
                return await self.view(existing, principal), False
            # a reference clash (the unique index caught it): take another
        raise RuntimeError("could not allocate a unique reference")

    async def _join(self, key: str, case_id: str) -> None:
        """Put a case at the end of a keyed list: the position is reserved under the list's
        lock, written once it is released (appends to one list do not wait for each other's
        writes); a position another instance took means the next one."""
        while True:
            async with self.locks.hold(lock_key("list", key)):
                position = await self.store.list_reserve(key)
            if await self.store.list_claim(key, position, case_id):
                return

    async def _claim_key(
        self, principal: Principal, key: str, body: CaseCreate, case_id: str, at: datetime
    ) -> str:
        claim = IdempotencyClaim(
            id=json.dumps([principal.role, principal.sub, key]),
            case_id=case_id,
            fingerprint=fingerprint(self.keyring, body),
            at=at,
        )
        existing = await self.store.claim_key(claim, until=at + self.limits.idempotency_key)
        if existing is None:
            return case_id
        if existing.fingerprint != fingerprint(
            self.keyring, body, rules.fingerprint_key_id(existing.fingerprint)
        ):
            raise Problem(
                422,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "this Idempotency-Key was used for a different request; use a new key",
                errors=[{"field": "header.Idempotency-Key", "message": "used for another body"}],
            )
        return existing.case_id

    # records

    async def add_document(
        self, *, principal: Principal, case_id: str, upload: Upload
    ) -> tuple[DocumentView, bool]:
        """Store a record on a draft: (metadata, True), or the same file already there (False).
        The case is read once, under its lock, before the upload is looked at."""
        async with self.locks.hold(self.emitter.lock(case_id)):
            case = await self.writable(principal, case_id)
            rules.check_draft(case.status, "added", request_open=case.open_request is not None)
            content_type, filename = rules.check_upload(
                upload.data, upload.filename, upload.declared, self.limits.max_document_bytes
            )
            ring = await self.keys.ring(case.key_ref)
            ids = document_ids(ring, case_id, upload.data)
            held = [rules.document_id_of(case_id, i) for i in ids]
            held = [i for i in held if i in case.record_ids]
            existing = await self.store.record(held[0]) if held else None
            if existing is not None:
                return shown(ring, existing), False
            rules.check_documents(len(case.record_ids), at_most=self.limits.max_documents_per_case)
            document_id, record_id = ids[0], rules.document_id_of(case_id, ids[0])
            sha256 = hashlib.sha256(upload.data).hexdigest()
            details = RecordDetails(filename=filename, sha256=sha256)
            record = Record(
                id=record_id,
                case_id=case_id,
                document_id=document_id,
                details=ring.seal_json(details, rules.record_aad(record_id)),
                kind=upload.kind,
                content_type=content_type,
                size=len(upload.data),
                uploaded_at=now(),
                uploaded_by=Actor(sub=principal.sub, role=principal.role),
            )
            await self.store.put_record(record, upload.data, ring)
            await self.auditor.record(
                principal, case_id, "document.add", target=document_id, locked=True
            )
        log.info("record stored", case_id=case_id, document_id=document_id, size=len(upload.data))
        return record.view(details), True

    async def delete_document(
        self, *, principal: Principal, case_id: str, document_id: str
    ) -> None:
        """Remove a record from a draft."""
        async with self.locks.hold(self.emitter.lock(case_id)):
            rules.check_draft((await self.writable(principal, case_id)).status, "removed")
            record_id = rules.document_id_of(case_id, document_id)
            if not await self.store.delete_record(case_id, record_id):
                raise not_found("document", DOCUMENT_NOT_FOUND)
            await self.auditor.record(
                principal, case_id, "document.delete", target=document_id, locked=True
            )
        log.info("record removed", case_id=case_id, document_id=document_id)

    async def open_document(
        self, *, principal: Principal, case_id: str, document_id: str, reason: str | None = None
    ) -> Download:
        """A record's metadata and bytes, for a reader allowed the clinical content (coordinators
        say why: `reason`)."""
        audited = self.auditor.reading(
            principal, case_id, "document.read", target=document_id, reason=reason
        )
        async with audited as read:
            case = await self._clinical(principal, case_id, reason)
            record_id = rules.document_id_of(case_id, document_id)
            listed = record_id in case.record_ids
            record = await self.store.record(record_id) if listed else None
            read.ring = ring = await self.keys.ring(case.key_ref)
            chunks = await self.store.record_bytes(record, ring) if record else None
            if record is None or chunks is None:
                raise not_found("document", DOCUMENT_NOT_FOUND)
        return Download(meta=shown(ring, record), chunks=chunks)

    # submitting, withdrawing

    async def submit(self, *, principal: Principal, case_id: str, body: SubmitIn) -> CaseView:
        """Submit a draft with the patient's consent; submitting again returns the same case."""
        async with self.locks.hold(self.emitter.lock(case_id)):
            case = await self.writable(principal, case_id)
            if not rules.check_submittable(case.status):
                return await self.view(
                    case, principal
                )  # already submitted: same result, no second event
            at = now()
            rules.check_consent(body, at)
            records = await self.store.records_of(case)
            rules.check_documents(len(records))
            scopes = list(dict.fromkeys(body.consent.scopes))
            consent = StoredConsent(
                text_version=body.consent.text_version,
                accepted_at=body.consent.accepted_at,
                scopes=scopes,
                recorded_at=at,
            )
            ring = await self.keys.ring(case.key_ref)
            content = opened(ring, case)
            rules.check_physician_consent(scopes, has_email=content.physician_email is not None)
            secret, claim = new_claim(self.keyring, case)
            physician = physician_contact(case, content, scopes)

            def submitted(event_id: str) -> CaseSubmitted:
                contact = PatientContact.model_validate(content.patient.model_dump())
                return submission_of(
                    case,
                    scopes=scopes,
                    documents=len(records),
                    at=at,
                    case_url=f"{self.public_url}/v1/cases/{case_id}",
                    contact=ring.seal_json(contact, aad=event_id),
                    claim=ring.seal_json(ClaimSecret(secret=secret), aad=event_id)
                    if secret is not None
                    else None,
                    physician=ring.seal_json(physician, aad=event_id)
                    if physician is not None
                    else None,
                    # Only for a translator of an international review the patient accepted.
                    summary=ring.seal_json(CaseSummary(text=content.clinical_summary), aad=event_id)
                    if rules.accepts_international_review(scopes)
                    else None,
                )

            # The submission starts the case's trace: the event's trace is the one kept.
            event = self.emitter.event("intake.case.submit", submitted, trace=case.traceparent)
            entry = StoredEntry(
                id=event.id, kind=TimelineKind.SUBMITTED, status=CaseStatus.SUBMITTED, at=at
            )
            stored = await self.emitter.write(
                lambda events: self.store.submit(
                    case_id,
                    at=at,
                    consent=consent,
                    traceparent=event.traceparent,
                    entry=entry,
                    events=events,
                    claim=claim,
                ),
                [event],
                aggregate=case_id,
            )
            await self.auditor.record(principal, case_id, "case.submit", locked=True)
        log.info("case submitted", case_id=case_id, event_id=event.id)
        if stored is None:  # gone between its read and its write: nothing was written
            raise not_found("case", CASE_NOT_FOUND)
        # The case as the write left it (not read a second time); its records are the ones
        # just counted (a submitted case takes no more and loses none).
        return await self.view(stored, principal, records)

    async def claim(self, *, principal: Principal, case_id: str, secret: str) -> CaseView:
        """Bind a partner-filed case to the patient holding its one-time secret, once: a wrong
        secret is the 404 of a case that does not exist, a claimed case a 409."""
        async with self.locks.hold(self.emitter.lock(case_id)):
            case = await self.case_or_none(case_id)
            stored = case.claim if case is not None else None
            matches = False
            if case is not None and stored is not None and stored.kid in self.keyring.kids:
                _, key = self.keyring.derive(rules.CLAIM_PURPOSE, stored.kid)
                matches = rules.claim_matches(key, case_id, secret, stored.digest)
            try:
                rules.check_claimable(matches=matches, patient_id=case.patient_id if case else None)
            except Problem as refused:
                # A failed claim of a case that exists is in its trail; the caller still gets
                # the 404 of a made-up id (or the 409 of a claimed case).
                if case is not None:
                    status = refused.status
                    await self.auditor.record(
                        principal, case_id, "case.claim", refused=status, locked=True
                    )
                raise
            assert case is not None  # a missing case is refused above
            # The patient's list learns of the case first: an entry whose case is not (yet)
            # theirs is skipped when read, a claimed case missing from it would never be seen.
            await self._join(list_key("patient_id", principal.sub), case_id)
            at = now()
            # Reports and notify learn the patient from this event, so the report and the
            # emailed links open for them too.
            claimed = CaseClaimed(case_id=case_id, patient_id=principal.sub, claimed_at=at)
            event = self.emitter.event("intake.case.claim", claimed, trace=case.traceparent)
            await self.emitter.write(
                lambda events: self.store.claim(
                    case_id, patient_id=principal.sub, at=at, events=events
                ),
                [event],
                aggregate=case_id,
            )
            await self.auditor.record(principal, case_id, "case.claim", locked=True)
        log.info("case claimed", case_id=case_id)
        return await self.get_case(principal=principal, case_id=case_id)

    async def withdraw(self, *, principal: Principal, case_id: str) -> CaseView:
        """Withdraw a case before its report; withdrawing again returns the same case.

        A draft nobody else has heard of is withdrawn quietly; a submitted case publishes
        `avis.case.withdrawn.v1`.
        """
        async with self.locks.hold(self.emitter.lock(case_id)):
            case = await self.writable(principal, case_id)
            if not rules.check_withdrawable(case.status):
                return await self.view(case, principal)
            at = now()
            events: list[Event] = []
            if case.status != CaseStatus.DRAFT:
                withdrawn = CaseWithdrawn(case_id=case_id, withdrawn_at=at)
                events.append(
                    self.emitter.event("intake.case.withdraw", withdrawn, trace=case.traceparent)
                )
            entry = StoredEntry(
                id=events[0].id if events else f"{case_id}:withdrawn",
                kind=TimelineKind.WITHDRAWN,
                status=CaseStatus.WITHDRAWN,
                at=at,
            )
            await self.emitter.write(
                lambda events: self.store.withdraw(case_id, at=at, entry=entry, events=events),
                events,
                aggregate=case_id,
            )
            await self.auditor.record(principal, case_id, "case.withdraw", locked=True)
        log.info("case withdrawn", case_id=case_id)
        stored = await self._readable(principal, case_id, clinical=False)
        return await self.view(stored, principal)


# Updates the requests of a case when a change applies (the case as it is -> the requests).
RequestsUpdate = Callable[[Case], Awaitable[list[StoredRequest]]]


class Reported:
    """A case's status and timeline as the other services report them, and the answers to the
    specialist's requests for more information, which send the case back to review."""

    def __init__(self, intake: IntakeService) -> None:
        self.intake = intake

    async def follow(
        self, *, case_id: str, change: Change, requests: RequestsUpdate | None = None
    ) -> bool:
        """Apply a change reported by an event (and to the case's requests for more
        information, `requests`); False if it changes nothing (and why is logged)."""
        intake = self.intake
        async with intake.locks.hold(intake.emitter.lock(case_id)):
            case = await intake.case_or_none(case_id)
            if case is None:
                # Intake files every case, so nothing can make this one known later but a
                # restore of intake's own data: a dead letter, replayable then, never a wait.
                raise PoisonMessage(f"unknown case: intake never filed it ({change.kind.value})")
            decision = rules.decide(case.state, change)
            if not decision.apply or decision.status is None:
                log.info("event changes nothing", kind=change.kind.value, reason=decision.reason)
                return False
            reviewer = None
            if decision.reviewer == ASSIGN:
                reviewer = CurrentReviewer(change.reviewer_id, change.assignment_id, change.at)
                if change.reviewer_id and change.reviewer_id != case.reviewer_id:
                    key = list_key("reviewer_id", change.reviewer_id)
                    await intake._join(key, case_id)
            elif decision.reviewer == CLEAR:
                reviewer = CurrentReviewer(None, None)
            entry = StoredEntry(
                id=change.event_id, kind=change.kind, status=decision.status, at=change.at
            )
            await intake.store.follow(
                case_id,
                status=decision.status,
                entry=entry,
                reviewer=reviewer,
                at=now(),
                seq=decision.seq,
                requests=None if requests is None else await requests(case),
            )
        log.info("case updated", kind=change.kind.value, status=decision.status.value)
        return True

    async def information_requested(
        self, *, event_id: str, change: Change, requested: InformationRequested
    ) -> bool:
        """The specialist asked: the case awaits the patient's answer (by the sequence rule),
        the question kept sealed under the case's key, bound to where it is kept."""
        ring_of = self.intake.keys

        async def keep(case: Case) -> list[StoredRequest]:
            if any(r.id == requested.request_id for r in case.requests):
                return case.requests
            opened = (await ring_of.opening(requested.question)).open_model(
                requested.question, event_id, InformationQuestion
            )
            ring = await ring_of.ring(case.key_ref)
            aad = rules.information_aad(case.id, requested.request_id, "question")
            asked = StoredRequest(
                id=requested.request_id,
                assignment_id=requested.assignment_id,
                requested_at=requested.requested_at,
                expires_at=requested.expires_at,
                question=ring.seal_json(opened, aad),
                records_before=len(case.record_ids),
            )
            return [*case.requests, asked]

        return await self.follow(case_id=requested.case_id, change=change, requests=keep)

    async def review_resumed(self, *, change: Change, resumed: ReviewResumed) -> bool:
        """The review goes on (the answer came, or the request expired): the request closes and
        the case is back in review (by the sequence rule)."""

        async def close(case: Case) -> list[StoredRequest]:
            expired = resumed.outcome == "expired"
            return [
                r.model_copy(update={"closed_at": resumed.resumed_at, "expired": expired})
                if r.id == resumed.request_id and r.closed_at is None
                else r
                for r in case.requests
            ]

        return await self.follow(case_id=resumed.case_id, change=change, requests=close)

    async def answer(
        self, *, principal: Principal, case_id: str, request_id: str, body: InformationAnswerIn
    ) -> CaseView:
        """The patient (or the filing partner) answers an open request: the answer is kept
        sealed here, and `avis.case.information-provided.v1` (no text) resumes the review."""
        intake = self.intake
        async with intake.locks.hold(intake.emitter.lock(case_id)):
            case = await intake.writable(principal, case_id)
            request = next((r for r in case.requests if r.id == request_id), None)
            rules.check_answerable(
                found=request is not None,
                open_=request is not None and request is case.open_request,
                principal=principal,
            )
            assert request is not None
            at = now()
            added = max(len(case.record_ids) - request.records_before, 0)
            provided = InformationProvided(
                case_id=case_id, request_id=request_id, provided_at=at, document_count=added
            )
            event = intake.emitter.event(
                "intake.information.answer", provided, trace=case.traceparent
            )
            ring = await intake.keys.ring(case.key_ref)
            aad = rules.information_aad(case_id, request_id, "answer")
            answered = request.model_copy(
                update={
                    "answer": ring.seal_json({"text": body.text}, aad),
                    "answered_at": at,
                    "documents_added": added,
                }
            )
            requests = [answered if r.id == request_id else r for r in case.requests]
            entry = StoredEntry(
                id=event.id, kind=TimelineKind.INFORMATION_PROVIDED, status=case.status, at=at
            )
            await intake.emitter.write(
                lambda events: intake.store.information.answer(
                    case_id, requests=requests, entry=entry, at=at, events=events
                ),
                [event],
                aggregate=case_id,
            )
            await intake.auditor.record(principal, case_id, "information.answer", locked=True)
        log.info("information provided", case_id=case_id, records=added)
        return await intake.view(await intake.writable(principal, case_id), principal)


def opened_request(ring: Keyring, case_id: str, request: StoredRequest) -> InformationRequestView:
    """A request for more information with its question and answer opened (`ring`: the
    case's)."""

    def text(sealed: Sealed | None, part: str) -> str | None:
        if sealed is None:
            return None
        aad = rules.information_aad(case_id, request.id, part)
        return str(ring.open_json(sealed, aad)["text"])

    return request.view(text(request.question, "question"), text(request.answer, "answer"))


def lists_of(principal: Principal) -> list[str]:
    """The keyed lists a case filed by `principal` joins: every case's, and its owner's."""
    if principal.role == "patient":
        return ["all", list_key("patient_id", principal.sub)]
    if principal.role == "partner":
        return ["all", list_key("partner_id", principal.partner_id)]
    return ["all"]


def new_case(
    keyring: Keyring,
    principal: Principal,
    body: CaseCreate,
    case_id: str,
    reference: str,
    at: datetime,
    key_ref: str | None,
) -> Case:
    """A new draft as stored: the patient's identity, the physician's name and the clinical
    summary sealed under the case key `key_ref` (`keyring` leads with it), bound to the case."""
    patient = body.patient
    physician = body.physician
    content = CaseContent(
        patient=StoredPatient(
            given_name=patient.given_name.strip(),
            family_name=patient.family_name.strip(),
            birth_date=patient.birth_date.isoformat(),
            email=patient.email,
            phone=patient.phone,
            preferred_language=patient.preferred_language,
        ),
        physician_name=physician.name.strip() if physician and physician.name else None,
        physician_email=physician.email if physician else None,
        physician_language=physician.language if physician else None,
        clinical_summary=body.clinical_summary,
    )
    return Case(
        id=case_id,
        reference=reference,
        status=CaseStatus.DRAFT,
        patient_id=principal.sub if principal.role == "patient" else None,
        partner_id=principal.partner_id if principal.role == "partner" else None,
        partner_reference=body.partner_reference,
        created_by=Actor(sub=principal.sub, role=principal.role),
        content=keyring.seal_json(content, rules.case_aad(case_id)),
        key_ref=key_ref,
        physician=StoredPhysician(institution_code=physician.institution_code)
        if physician
        else None,
        specialty=body.specialty,
        urgency=body.urgency,
        language=patient.preferred_language,
        questions=body.questions,
        created_at=at,
        updated_at=at,
        timeline=[
            StoredEntry(
                id=f"{case_id}:created", kind=TimelineKind.CREATED, status=CaseStatus.DRAFT, at=at
            )
        ],
    )


def physician_contact(
    case: Case, content: CaseContent, scopes: list[ConsentScope]
) -> PhysicianContact | None:
    """The treating physician to send the report to, only with the patient's consent (written
    to in their own language, else in the patient's)."""
    if not rules.shared_with_physician(scopes) or content.physician_email is None:
        return None
    return PhysicianContact(
        name=content.physician_name,
        email=content.physician_email,
        language=content.physician_language or content.patient.preferred_language,
        institution_code=case.physician.institution_code if case.physician else None,
        link_secret=rules.new_claim_secret(),  # as random as a claim's; intake keeps no trace
    )


def submission_of(
    case: Case,
    *,
    scopes: list[ConsentScope],
    documents: int,
    at: datetime,
    case_url: str,
    contact: Sealed,
    claim: Sealed | None = None,
    physician: Sealed | None = None,
    summary: Sealed | None = None,
) -> CaseSubmitted:
    """What `avis.case.submitted.v1` says of a case: codes, ids, the sealed contact and, for a
    case without a patient, its sealed claim secret."""
    share = rules.shared_with_partner(scopes)
    return CaseSubmitted(
        case_id=case.id,
        reference=case.reference,
        specialty=case.specialty,
        urgency=case.urgency,
        language=case.language,
        questions=case.questions,
        physician_institution=case.physician.institution_code if case.physician else None,
        # The referring partner hears of the case only if the patient agreed.
        partner_id=case.partner_id if share else None,
        partner_reference=case.partner_reference if share else None,
        patient_id=case.patient_id,
        consent_scopes=[SubmittedScope(s) for s in rules.published_scopes(scopes)],
        international_review=rules.accepts_international_review(scopes),
        document_count=documents,
        submitted_at=at,
        case_url=case_url,
        contact=contact,
        claim=claim,
        physician=physician,
        summary=summary,
        key_ref=case.key_ref,
    )
