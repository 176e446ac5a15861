"""The reports service's use cases: follow a case and its opinions, issue report versions, and
serve them to those who may read them.

A case's submission and its opinion come on different topics, in no guaranteed order. Whichever
comes first is kept on the case's aggregate (the opinion parked, sealed) and the second one
completes it; nothing waits on a partition. Every opinion version newer than the last one
composed becomes a report version; a redelivered event finds its effect already there.

Every write to a case holds the case's lock (`emitter.lock(case_id)`, which the outbox relay
takes too).
Rendering the PDF is kept off the consumer's path: it happens in the background after a version
is issued, or on the first request for it, in one worker thread, and is then kept (sealed).
"""

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from avis.reports.i18n import texts
from avis.reports.models import AddendumSection, Report, ReportVersionPage
from avis.reports.pdf import render_pdf
from avis.reports.rules import (
    ACCESS_WINDOWS,
    FORMATS,
    PHYSICIAN_LINK_PURPOSE,
    AccessWindows,
    CaseFacts,
    OpinionFacts,
    Readers,
    addendum_aad,
    addendum_section,
    compose,
    contact_aad,
    erasable_versions,
    fold_window,
    may_read,
    may_read_trail,
    opinion_aad,
    opinions_to_compose,
    page_of_versions,
    pdf_aad,
    physician_link_digest,
    physician_link_expired,
    physician_link_lapsed,
    physician_link_matches,
    pseudonymised,
    report_aad,
    report_id_for,
    report_seq,
    reviewer_access_lapsed,
    sees_identity,
    version_key,
    waits_for_its_case,
)
from avis.reports.store import (
    CaseDoc,
    CaseRecord,
    PdfCache,
    PhysicianLink,
    ReceivedOpinion,
    Store,
    VersionDoc,
    VersionEntry,
)
from avis.shared.access_log import (
    AccessLog,
    TrailPage,
    TrailWriter,
    check_reason,
    reasons_ring,
)
from avis.shared.case_keys import CaseKeyDestroyed, CaseKeys, key_ref_of
from avis.shared.clock import now
from avis.shared.emit import Emitter
from avis.shared.envelope import Event, PoisonMessage
from avis.shared.events import (
    CaseClaimed,
    CaseErased,
    CaseSubmitted,
    CaseWithdrawn,
    CompletedOpinion,
    FollowUpAnswer,
    Language,
    PatientContact,
    PhysicianContact,
    ReportReady,
    ReviewCompleted,
)
from avis.shared.kafka import RetryLater
from avis.shared.mongo import AggregateLocks, lock_key
from avis.shared.observability import case_span, stage_reached
from avis.shared.parking import Parking
from avis.shared.problems import Problem, not_found
from avis.shared.sealing import M, Sealed, SealingError
from avis.shared.security import Principal

log = structlog.get_logger("avis.reports")
SOURCE = "/avis/reports"
RENDER_QUEUE_SIZE = 1000


def _not_found() -> Problem:
    """The one answer for a report that does not exist or that the caller may not read."""
    return not_found("report", "report-not-found")


def readers_of(case: CaseDoc, at: datetime, reviewer_window: timedelta) -> Readers:
    """Who may read a case's report at `at`, from what its events said (a reviewer's access
    lapses `reviewer_window` after their last opinion version)."""
    record = case.case
    last_active: dict[str, datetime] = {}
    for o in case.opinions:  # a reviewer's activity: when they completed an opinion version
        when = o.completed_at if o.completed_at.tzinfo else o.completed_at.replace(tzinfo=UTC)
        last_active[o.reviewer_id] = max(when, last_active.get(o.reviewer_id, when))
    for v in case.versions:  # kept opinions name every author; the issue date if not
        when = v.issued_at if v.issued_at.tzinfo else v.issued_at.replace(tzinfo=UTC)
        last_active.setdefault(v.reviewer_id, when)
    lapsed = [
        reviewer_id
        for reviewer_id, when in last_active.items()
        if reviewer_access_lapsed(
            last_active=when,
            request_open=False,  # follow-up questions and requests for information: not yet
            at=at,
            window=reviewer_window,
        )
    ]
    return Readers(
        patient_id=record.patient_id if record else None,
        partner_id=record.partner_id if record else None,
        consent_scopes=frozenset(record.consent_scopes if record else ()),
        reviewer_ids=frozenset(last_active),
        lapsed_reviewer_ids=frozenset(lapsed),
    )


@dataclass(frozen=True)
class Served:
    """A report version opened for a reader."""

    version: VersionDoc
    report: Report
    pseudonymised: bool = False  # a reviewer's: no name, the age instead of the birth date


@dataclass(frozen=True)
class Pdf:
    """A rendered PDF and its ETag (`content` is None when the client's copy is current)."""

    content: bytes | None
    etag: str
    filename: str


class ReportsService:
    """Reports' operations over its store, its locks, the case keys and its emitter."""

    def __init__(
        self,
        *,
        store: Store,
        locks: AggregateLocks,
        emitter: Emitter,
        keys: CaseKeys,
        public_url: str,
        render_in_background: bool,
        parking: Parking,
        windows: AccessWindows = ACCESS_WINDOWS,
    ) -> None:
        self.parking = parking
        # How long a reviewer, and the physician's link, keep access to a case's report.
        self.windows = windows
        self.store = store
        self.locks = locks
        self.emitter = emitter
        # Each case's values are sealed under its own key; the service's keyring seals what
        # belongs to no case (the trail's reasons).
        self.keys = keys
        self.keyring = keys.keyring
        # Every read of a report by a person, and its refusals (`TrailWriter`).
        self.auditor = TrailWriter(
            append=store.audit, locks=locks, keyring=keys.keyring, fold=fold_window
        )
        self.public_url = public_url.rstrip("/")
        self.render_in_background = render_in_background
        # One thread renders PDFs, one at a time: the event loop stays free meanwhile.
        self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reports-pdf")
        self._to_render: asyncio.Queue[str] = asyncio.Queue(RENDER_QUEUE_SIZE)

    # --- sealing ---------------------------------------------------------------------------------

    async def opened(self, sealed: Sealed, aad: str, model: type[M], what: str) -> M:
        """A sealed value, opened with its case's key (CaseKeyDestroyed once it is erased)."""
        try:
            return (await self.keys.opening(sealed)).open_model(sealed, aad, model)
        except SealingError as exc:
            # Retrying cannot open it; the dead letter can be replayed once keys are fixed.
            raise PoisonMessage(f"the sealed {what} cannot be opened: {exc}") from None

    # --- events in -------------------------------------------------------------------------------

    async def case_submitted(self, *, event_id: str, case: CaseSubmitted, traceparent: str) -> None:
        """Keep what the report needs of a submitted case; compose any opinion already parked."""
        case_id = case.case_id
        key_ref = case.key_ref or key_ref_of(case.contact)
        record = await case_record(self, event_id, case, key_ref)
        async with self.locks.hold(self.emitter.lock(case_id)):
            stored = await self.store.case(case_id)
            if stored is None:
                fresh = CaseDoc(
                    id=case_id,
                    report_id=report_id_for(case_id),
                    key_ref=key_ref,
                    case=record,
                    traceparent=traceparent,
                    created_at=now(),
                )
                if not await self.store.insert_case(fresh):
                    # Written meanwhile by another instance: the retry takes the other branch.
                    raise RetryLater("the case record was written concurrently")
                log.info("case followed", case_id=case_id)
                return  # no opinion yet: nothing to compose
            if stored.case is None and stored.erased_at is None:
                if stored.withdrawn_at is not None:
                    # Withdrawn before it reached us: who may read stays known, the contact not.
                    record = record.model_copy(update={"contact": None})
                await self.store.set_case_record(case_id, record, traceparent, key_ref)
                await self.parking.release(case_id)
                log.info("case followed", case_id=case_id, opinions_waiting=len(stored.opinions))
                written = {
                    "case": record,
                    "traceparent": traceparent or stored.traceparent,
                    "key_ref": key_ref or stored.key_ref,
                }
                stored = stored.model_copy(update=written)
            await self._compose_due(stored)

    async def review_completed(self, *, event: Event, review: ReviewCompleted) -> None:
        """Keep an opinion version (sealed for reports) and compose its report if the case is
        known; otherwise it waits, parked on the case, for the submission (a bounded wait:
        `expire_parked`)."""
        event_id, traceparent = event.id, event.traceparent
        case_id = review.case_id
        opinion = await self.opened(review.opinion, event_id, CompletedOpinion, "opinion")
        async with self.locks.hold(self.emitter.lock(case_id)):
            stored = await self.store.case(case_id)
            # Kept under the case's key as its submission named it, else the opinion's.
            key_ref = (stored.key_ref if stored else None) or key_ref_of(review.opinion)
            received = ReceivedOpinion(
                version=review.version,
                event_id=event_id,
                assignment_id=review.assignment_id,
                reviewer_id=review.reviewer_id,
                specialty=review.specialty,
                completed_at=review.completed_at,
                sealed=(await self.keys.ring(key_ref)).seal_json(
                    opinion, opinion_aad(case_id, review.version)
                ),
                seq=review.report_seq or review.seq,
            )
            if stored is None:
                parked = CaseDoc(
                    id=case_id,
                    report_id=report_id_for(case_id),
                    key_ref=key_ref,
                    opinions=[received],
                    traceparent=traceparent,
                    created_at=now(),
                )
                if not await self.store.insert_case(parked):
                    # Written meanwhile by another instance: the retry takes the other branch.
                    raise RetryLater("the case record was written concurrently")
                await self.parking.park(event)
                log.info("opinion waits for its case", case_id=case_id, version=review.version)
                return  # parked: composed when its case comes
            if stored.withdrawn_at is not None or stored.erased_at is not None:
                log.info("opinion of a withdrawn or erased case ignored", case_id=case_id)
                return
            if review.version not in {o.version for o in stored.opinions}:
                await self.store.add_opinion(case_id, received)
                if stored.case is None:
                    await self.parking.park(event)
                stored = stored.model_copy(update={"opinions": [*stored.opinions, received]})
            await self._compose_due(stored)

    async def case_claimed(self, *, claim: CaseClaimed) -> None:
        """A partner-filed case has its patient from now on: the report opens for them."""
        case_id = claim.case_id
        async with self.locks.hold(self.emitter.lock(case_id)):
            stored = await self.store.case(case_id)
            if stored is None:
                # Its submission comes first on the same partition: it was dead-lettered, so
                # is this claim, to be replayed after it.
                raise PoisonMessage("a claim of a case reports never received")
            if stored.case is not None and stored.case.patient_id is None:
                await self.store.set_patient(case_id, claim.patient_id)
        log.info("case claimed", case_id=case_id)

    async def case_withdrawn(self, *, withdrawal: CaseWithdrawn) -> None:
        """A withdrawn case gets no report from now on; one already issued stays readable."""
        case_id = withdrawal.case_id
        async with self.locks.hold(self.emitter.lock(case_id)):
            stored = await self.store.case(case_id)
            if stored is None:
                # A tombstone: a submission or opinion arriving later is not composed.
                tombstone = CaseDoc(
                    id=case_id,
                    report_id=report_id_for(case_id),
                    withdrawn_at=withdrawal.withdrawn_at,
                    created_at=now(),
                )
                await self.store.insert_case(tombstone)
            elif stored.withdrawn_at is None:
                # Without an issued report, the contact and the opinions are no longer needed.
                forget = not stored.versions
                await self.store.set_withdrawn(case_id, withdrawal.withdrawn_at, forget=forget)
                await self.parking.release(case_id)  # a final word: nothing of it waits
            log.info("case withdrawn", case_id=case_id)

    async def expire_parked(self, *, case_id: str, give_up: Callable[[], Awaitable[None]]) -> bool:
        """The case never came: drop the opinions parked for it and dead-letter their events
        (`give_up`); False if the case is known by now (or withdrawn), and nothing is dropped."""
        async with self.locks.hold(self.emitter.lock(case_id)):
            stored = await self.store.case(case_id)
            submitted = stored is not None and stored.case is not None
            withdrawn = stored is not None and stored.withdrawn_at is not None
            if not waits_for_its_case(submitted=submitted, withdrawn=withdrawn):
                return False
            await self.store.drop_parked(case_id)
            await give_up()
            log.warning("opinions for an unknown case dead-lettered", case_id=case_id)
            return True

    # --- composing --------------------------------------------------------------------------------

    async def _compose_due(self, case: CaseDoc) -> None:
        """Issue a report version for each opinion version due; the caller holds the case and
        gives it as stored now (read, plus what the caller wrote since), so it is not read
        again."""
        due = opinions_to_compose(
            [o.version for o in case.opinions],
            [v.opinion_version for v in case.versions],
            case_known=case.case is not None,
            withdrawn=case.withdrawn_at is not None or case.erased_at is not None,
        )
        by_version = {o.version: o for o in case.opinions}
        for opinion_version in due:
            version = max((v.version for v in case.versions), default=0) + 1
            entry = await self._issue(case, by_version[opinion_version], version)
            case = case.model_copy(update={"versions": [*case.versions, entry]})

    async def _issue(self, case: CaseDoc, received: ReceivedOpinion, version: int) -> VersionEntry:
        """Compose, keep and announce one report version."""
        key = version_key(case.report_id, version)
        # An earlier attempt may have stopped after keeping the version: announce that one.
        stored = await self.store.version(key) or await self._keep(case, received, version)
        await self.store.claim_report_id(case.report_id, case.id)
        entry = VersionEntry(
            version=version,
            opinion_version=stored.opinion_version,
            reviewer_id=received.reviewer_id,
            language=stored.language,
            issued_at=stored.issued_at,
            seq=report_seq(received.seq),
            addenda=len(case.addenda),
        )
        await self.announce(case, stored, entry)
        stage_reached("completed_to_report_ready", since=received.completed_at, at=entry.issued_at)
        log.info(
            "report issued",
            case_id=case.id,
            report_id=case.report_id,
            version=version,
            opinion_version=stored.opinion_version,
        )
        return entry

    async def _keep(self, case: CaseDoc, received: ReceivedOpinion, version: int) -> VersionDoc:
        """Compose a report version and keep it."""
        report = await kept_addenda(self, case, await self._compose(case, received, version, now()))
        return await self.keep(case, report, opinion_version=received.version)

    async def keep(self, case: CaseDoc, report: Report, *, opinion_version: int) -> VersionDoc:
        """Keep a composed report as its version, sealed (the one kept first if it raced)."""
        key = version_key(case.report_id, report.version)
        stored = VersionDoc(
            id=key,
            report_id=case.report_id,
            case_id=case.id,
            version=report.version,
            opinion_version=opinion_version,
            language=report.language,
            issued_at=report.issued_at,
            report=(await self.keys.ring(case.key_ref)).seal_json(report, report_aad(key)),
            traceparent=case.traceparent,
        )
        if not await self.store.insert_version(stored):
            return await self.store.version(key) or stored
        return stored

    async def _compose(
        self, case: CaseDoc, received: ReceivedOpinion, version: int, issued_at: datetime
    ) -> Report:
        """Open the contact and the opinion, and compose the report in the patient's language."""
        record = case.case
        assert record is not None and record.contact is not None  # opinions_to_compose says so
        contact = await self.opened(record.contact, contact_aad(case.id), PatientContact, "contact")
        content = await self.opened(
            received.sealed, opinion_aad(case.id, received.version), CompletedOpinion, "opinion"
        )
        return compose(
            texts=texts(record.language),
            case=CaseFacts(
                case_id=case.id,
                reference=record.reference,
                specialty=record.specialty,
                language=record.language,
                questions=tuple(record.questions),
                submitted_at=record.submitted_at,
            ),
            contact=contact,
            opinion=OpinionFacts(content, received.specialty, received.completed_at),
            report_id=case.report_id,
            version=version,
            issued_at=issued_at,
            source_texts=texts(content.translated_from) if content.translated_from else None,
        )

    async def announce(self, case: CaseDoc, stored: VersionDoc, entry: VersionEntry) -> None:
        """Record the version on the case and put its `report-ready` on the outbox, in one write;
        then queue its PDF for rendering (a full queue: it renders on its first request)."""
        ready = ReportReady(
            case_id=case.id,
            report_id=case.report_id,
            version=entry.version,
            languages=[stored.language],
            formats=list(FORMATS),
            ready_at=stored.issued_at,
            report_url=self.version_url(report_id=case.report_id, version=entry.version),
            seq=entry.seq,
        )
        await self.emitter.emit(
            "reports.issue",
            ready,
            aggregate=case.id,
            trace=case.traceparent,
            write=lambda events: self.store.add_version(case.id, entry, list(events)),
        )
        if self.render_in_background:
            with contextlib.suppress(asyncio.QueueFull):
                self._to_render.put_nowait(stored.id)

    def version_url(self, *, report_id: str, version: int) -> str:
        """Where a report version is read (JSON; PDF and FHIR by content negotiation)."""
        return f"{self.public_url}/v1/reports/{report_id}?version={version}"

    # --- reading ----------------------------------------------------------------------------------

    async def _readable(
        self, *, principal: Principal, case_id: str, action: str, reason: str | None = None
    ) -> tuple[CaseDoc, str | None]:
        """The case, if `principal` may read its report, and the reason a coordinator gave for
        reading the report's clinical content (428 without one); a refusal of a report that
        exists is recorded in the case's access trail."""
        case = await self.store.case(case_id)
        if case is None or not case.versions:
            raise _not_found()
        try:
            if not may_read(principal, readers_of(case, now(), self.windows.reviewer)):
                raise _not_found()
            given = check_reason(principal, reason) if action == "report.read" else None
            if case.erased_at is not None:
                raise CaseKeyDestroyed()  # 410, as a read that finds the key destroyed
        except Problem as refused:
            await self.auditor.record(principal, case_id, action, refused=refused.status)
            raise
        return case, given

    async def access_log(
        self, *, principal: Principal, case_id: str, cursor: int | None, limit: int
    ) -> AccessLog:
        """Who read the case's report, oldest first, in plain words."""
        page = await self.trail(principal=principal, case_id=case_id, cursor=cursor, limit=limit)
        return page.view(principal, await reasons_ring(self.keys, page), limit)

    async def trail(
        self, *, principal: Principal, case_id: str, cursor: int | None, limit: int
    ) -> TrailPage:
        """A page of the case's access trail (one entry more than `limit` when more remain), for
        its patient and coordinators (404 for anyone else, as for a case nobody read)."""
        case = await self.store.case(case_id)
        readers = None if case is None else readers_of(case, now(), self.windows.reviewer)
        if readers is None or not may_read_trail(principal, readers):
            raise _not_found()
        return await self.store.trail_page(case_id, cursor or 0, limit + 1)

    async def report(
        self,
        *,
        principal: Principal,
        case_id: str | None = None,
        report_id: str | None = None,
        version: int | None = None,
        reason: str | None = None,
    ) -> Served:
        """A report version (the latest unless asked) of a case or a report id, opened."""
        if case_id is None:
            assert report_id is not None
            case_id = await self.store.case_of_report(report_id)
            if case_id is None:
                raise _not_found()
        case, given = await self._readable(
            principal=principal, case_id=case_id, action="report.read", reason=reason
        )
        if report_id is not None and report_id != case.report_id:
            raise _not_found()
        numbers = [v.version for v in case.versions]
        wanted = max(numbers) if version is None else version
        if wanted not in numbers:
            raise _not_found()
        key = version_key(case.report_id, wanted)
        stored = await self.store.version(key)
        if stored is None:
            raise _not_found()
        report = await self.opened(stored.report, report_aad(key), Report, "report")
        ring = None if given is None else await self.keys.ring(case.key_ref)
        await self.auditor.record(principal, case_id, "report.read", reason=given, ring=ring)
        if not sees_identity(principal):
            return Served(stored, pseudonymised(report, texts(report.language)), True)
        return Served(stored, report)

    async def versions(
        self, *, principal: Principal, case_id: str, cursor: int | None, limit: int
    ) -> ReportVersionPage:
        """A case's report versions, newest first."""
        case, _ = await self._readable(principal=principal, case_id=case_id, action="report.list")
        await self.auditor.record(principal, case_id, "report.list")
        by_number = {v.version: v for v in case.versions}
        page, next_cursor = page_of_versions(list(by_number), cursor, limit)
        items = [
            by_number[n].view(
                report_id=case.report_id,
                case_id=case.id,
                url=self.version_url(report_id=case.report_id, version=n),
            )
            for n in page
        ]
        return ReportVersionPage(
            items=items, next_cursor=None if next_cursor is None else str(next_cursor)
        )

    async def pdf(self, *, served: Served, if_none_match: Sequence[str] = ()) -> Pdf:
        """The PDF of a served version, rendered now if it was not yet (then kept)."""
        stored = served.version
        filename = f"{served.report.reference}-v{stored.version}.pdf"
        hidden = served.pseudonymised
        kept = stored.reviewer_pdf if hidden else stored.pdf
        cache = kept or await self._render(stored, served.report, pseudonymised=hidden)
        if cache.etag in if_none_match or "*" in if_none_match:
            return Pdf(None, cache.etag, filename)
        ring = await self.keys.opening(cache.sealed)
        content = ring.open(cache.sealed, pdf_aad(stored.id, pseudonymised=hidden))
        return Pdf(content, cache.etag, filename)

    async def _render(
        self, stored: VersionDoc, report: Report, *, pseudonymised: bool = False
    ) -> PdfCache:
        key = stored.id
        loop = asyncio.get_running_loop()
        with case_span("reports.render", stored.traceparent) as span:
            span.set_attribute("avis.case_id", stored.case_id)
            content = await loop.run_in_executor(self._renderer, render_pdf, report)
        ring = await self.keys.opening(stored.report)  # the PDF goes under its report's key
        cache = PdfCache(
            sealed=ring.seal(content, pdf_aad(key, pseudonymised=pseudonymised)),
            # A fresh tag per rendering, not a digest of the PDF: a plain hash of health data
            # kept in the store would let anyone holding a copy confirm it is this report.
            etag=f'"{secrets.token_hex(16)}"',
            size=len(content),
            rendered_at=now(),
        )
        async with self.locks.hold(lock_key("report-version", key)):
            await self.store.set_pdf(key, cache, pseudonymised=pseudonymised)
        return cache

    async def render_queued(self) -> None:
        """Render the PDFs of newly issued versions, one at a time, for the life of the service."""
        while True:
            key = await self._to_render.get()
            try:
                stored = await self.store.version(key)
                if stored is not None and stored.pdf is None:
                    report = await self.opened(stored.report, report_aad(key), Report, "report")
                    cache = await self._render(stored, report)
                    log.info("report rendered", report_id=stored.report_id, bytes=cache.size)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Rendered on its first request instead; the loop goes on.
                log.warning("background rendering failed", error=type(exc).__name__)


async def addendum_sections(
    reports: ReportsService, case: CaseDoc, language: str
) -> list[AddendumSection]:
    """The answers to follow-up questions kept so far, opened, as a report version shows them
    (every version after the first answer carries them all, a corrected one too)."""
    t = texts(language)
    sections = []
    for kept in case.addenda:
        aad = addendum_aad(case.id, kept.follow_up_id)
        answer = await reports.opened(kept.sealed, aad, FollowUpAnswer, "answer")
        sections.append(addendum_section(t, kept.number, answer, kept.answered_at))
    return sections


async def kept_addenda(reports: ReportsService, case: CaseDoc, report: Report) -> Report:
    """A report version composed from an opinion, with the answers kept so far: a correction
    after an addendum keeps it."""
    if not case.addenda:
        return report
    sections = await addendum_sections(reports, case, report.language)
    return report.model_copy(update={"addenda": sections})


async def case_record(
    reports: ReportsService, event_id: str, case: CaseSubmitted, key_ref: str | None
) -> CaseRecord:
    """What a report needs of a submitted case, its contact sealed under the case's key."""
    contact = await reports.opened(case.contact, event_id, PatientContact, "contact")
    ring = await reports.keys.ring(key_ref)
    return CaseRecord(
        reference=case.reference,
        specialty=case.specialty,
        language=case.language,
        questions=list(case.questions),
        patient_id=case.patient_id,
        partner_id=case.partner_id,
        consent_scopes=[s.value for s in case.consent_scopes],
        submitted_at=case.submitted_at,
        contact=ring.seal_json(contact, contact_aad(case.case_id)),
        physician_link=await physician_link(reports, event_id, case),
    )


async def physician_link(
    reports: ReportsService, event_id: str, case: CaseSubmitted
) -> PhysicianLink | None:
    """With the consent to send the physician the report: the keyed digest of the secret of
    the physician's link (the secret itself is kept nowhere here)."""
    if case.physician is None:
        return None
    physician = await reports.opened(case.physician, event_id, PhysicianContact, "physician")
    if physician.link_secret is None:
        return None
    kid, key = reports.keyring.derive(PHYSICIAN_LINK_PURPOSE)
    digest = physician_link_digest(key, case.case_id, physician.link_secret)
    return PhysicianLink(kid=kid, digest=digest)


async def physician_report(reports: ReportsService, *, case_id: str, secret: str) -> Served:
    """The latest report version of a case, whole, for the treating physician holding the
    secret of the link their email carried; the same 404 for a wrong secret, a case without
    that consent and a case without a report; 410 once the case is erased, or once the link has
    expired (`AccessWindows.physician_link` after the latest version was issued), with why."""
    case = await reports.store.case(case_id)
    link = case.case.physician_link if case is not None and case.case else None
    if case is None or link is None or not case.versions:
        raise _not_found()
    try:
        _, key = reports.keyring.derive(PHYSICIAN_LINK_PURPOSE, link.kid)
    except KeyError:  # the key it was derived from was retired: the link is void
        raise _not_found() from None
    if not physician_link_matches(key, case_id, secret, link.digest):
        raise _not_found()
    if case.erased_at is not None:
        raise CaseKeyDestroyed()
    latest = max(case.versions, key=lambda v: v.version)
    if physician_link_lapsed(
        issued_at=latest.issued_at, at=now(), window=reports.windows.physician_link
    ):
        # Told only to the holder of the secret: anyone else still gets the same 404.
        title, detail = physician_link_expired(
            reports.windows.physician_link, [texts(Language.EN), texts(Language.FR)]
        )
        raise Problem(410, "physician-link-expired", title, detail)
    key_of = version_key(case.report_id, latest.version)
    stored = await reports.store.version(key_of)
    if stored is None:
        raise _not_found()
    report = await reports.opened(stored.report, report_aad(key_of), Report, "report")
    await reports.auditor.record_link_read(case_id, "report.read")
    log.info("report read by the treating physician", case_id=case_id)
    return Served(stored, report)


class CaseErasure:
    """The erasure of a case (`avis.case.erased.v1`, after intake destroyed its key): reports
    drops its copy of the key and deletes what it derived from the case (the composed versions
    and their PDFs, the contact and opinions), and keeps the case's ids, codes and times."""

    def __init__(self, reports: ReportsService) -> None:
        self.store = reports.store
        self.locks = reports.locks
        self.emitter = reports.emitter
        self.keys = reports.keys
        self.parking = reports.parking

    async def case_erased(self, *, erasure: CaseErased) -> None:
        """Erase what reports keeps of the case; a redelivery finds it done."""
        case_id = erasure.case_id
        async with self.locks.hold(self.emitter.lock(case_id)):
            stored = await self.store.case(case_id)
            key_ref = erasure.key_ref or (stored.key_ref if stored is not None else None)
            self.keys.forget(key_ref)
            if stored is None:
                # A tombstone: a submission or an opinion replayed later is not composed.
                await self.store.insert_case(
                    CaseDoc(
                        id=case_id,
                        report_id=report_id_for(case_id),
                        key_ref=key_ref,
                        erased_at=erasure.erased_at,
                        created_at=now(),
                    )
                )
            elif stored.erased_at is None:
                issued = [v.version for v in stored.versions]
                keys = erasable_versions(stored.report_id, issued)
                await self.store.erase_case(case_id, erasure.erased_at, keys)
                await self.parking.release(case_id)  # nothing of it waits any more
        log.info("case erased", case_id=case_id, requested_by=erasure.requested_by)
