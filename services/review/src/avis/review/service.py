"""Review's use cases: triage and matching of submitted cases, the queue, accept, decline,
opinion and correction, the SLA gauge, and the reviewer directory. Each one reads through the
store, decides with `rules` (and the matcher, for who takes a case), writes through the store
and publishes through the emitter.

Concurrency: the store does not serialise concurrent writers, so every write holds its
aggregate's lock (`lock_key("case", id)`, `lock_key("reviewer", id)`, and an assignment's
`emitter.lock(id)`, which the outbox relay holds too while it publishes its events), and every
matching decision (read the loads, pick, write the assignment) runs inside the matcher's one
section across every copy of review (`Matcher.deciding()`: the `matcher` lease's section, then
the process's matching lock). Locks are always taken in the order matching -> case -> assignment ->
reviewer.

Several copies: a case's events reach the one copy that owns its `case-submitted` partition,
but HTTP writes reach any copy, so an in-process lock no longer keeps one outcome per
assignment. Every write that changes an assignment's state (accept, decline, opinion,
correction, the cancel of a withdrawal) or a reviewer's load therefore runs inside
`deciding()` too: two copies answering conflicting writes for one assignment at once (an
accept and a decline) run one after the other, and the second sees the first's outcome
(`rules.may_accept`, `rules.may_decline` decide it). The arbiter underneath is the lease's
duplicate-key insert, never a version-guarded update (the store lets racing ones all "match").

Every read and write of a case's opinions and decline reasons by a person is an entry of the
case's access trail (`AccessTrail`), appended under the trail's own lock, after the others.
"""

import asyncio
import hmac
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

import structlog
from prometheus_client import Counter as Counted
from prometheus_client import Gauge

from avis.review import contacts, rules
from avis.review.matching import Matcher
from avis.review.models import (
    ACTIVE,
    AssignBody,
    Assignment,
    AssignmentPage,
    AssignmentStatus,
    CaseStatus,
    DeclineBody,
    InformationRequestBody,
    InformationRequestPage,
    Opinion,
    OpinionVersion,
    QueuePage,
    RequestState,
    Reviewer,
    ReviewerIn,
    ReviewerPage,
    ReviewerPatch,
    TranslatorPage,
)
from avis.review.second_reading import SecondReadings
from avis.review.store import (
    LISTED,
    LISTED_FOR_REVIEWER,
    AssignmentDoc,
    CaseDoc,
    Decline,
    OpinionEntry,
    RequestEntry,
    ReviewerDoc,
    Store,
    TranslatorDoc,
)
from avis.review.translation import Translations, overdue_translations, specialist_waits
from avis.shared.access_log import (
    AccessLog,
    TrailPage,
    TrailWriter,
    check_reason,
    reasons_ring,
)
from avis.shared.case_keys import CaseKeyDestroyed, CaseKeys
from avis.shared.clock import now
from avis.shared.emit import Emitter
from avis.shared.envelope import PoisonMessage
from avis.shared.events import (
    CaseClaimed,
    CaseErased,
    CaseSubmitted,
    CaseWithdrawn,
    InformationProvided,
    InformationQuestion,
    InformationRequested,
    Language,
    ReviewAccepted,
    ReviewCompleted,
    ReviewDeclined,
    ReviewResumed,
    Specialty,
    Urgency,
)
from avis.shared.mongo import STORE_ERRORS, AggregateLocks, lock_key
from avis.shared.observability import current_traceparent, stage_reached
from avis.shared.problems import Problem, not_found
from avis.shared.sealing import Keyring
from avis.shared.security import Principal

log = structlog.get_logger("avis.review")

SOURCE = "/avis/review"

OVERDUE_ASSIGNMENTS = Gauge(
    "avis_review_overdue_assignments",
    "Assignments past their due date and not yet answered",
    ["service"],
)
OVERDUE_BY_SPECIALTY = Gauge(
    "avis_review_overdue_by_specialty",
    "Assignments past their due date and not yet answered, by specialty",
    ["service", "specialty"],
)
INFORMATION_WAITING = Gauge(
    "avis_information_requests_waiting",
    "Requests for more information asked of patients and not yet answered (their reviews' "
    "SLA clocks stand)",
    ["service"],
)
INFORMATION_EXPIRED = Counted(
    "avis_information_requests_expired",
    "Requests for more information that expired unanswered (the review went on without them)",
    ["service"],
)
OVERDUE_TRANSLATIONS = Gauge(
    "avis_review_overdue_translations",
    "Translations of international reviews past their own due date and not yet done",
    ["service"],
)
DUE_TODAY = Gauge(
    "avis_review_due_today",
    "Assignments not yet answered that are due today (UTC), past or not, by specialty",
    ["service", "specialty"],
)


def _same(keyring: Keyring, entry: OpinionEntry, opinion: Opinion) -> bool:
    """Whether `opinion` is the content of a stored version (by its keyed digest)."""
    kid = rules.digest_key_id(entry.digest)
    if kid is None:  # stored before sealing: its content is in clear
        return entry.opinion is not None and Opinion.model_validate(entry.opinion) == opinion
    if kid not in keyring.kids:
        return False
    _, key = keyring.derive(rules.OPINION_DIGEST_PURPOSE, kid)
    return hmac.compare_digest(entry.digest, rules.opinion_digest(kid, key, opinion))


class ReviewService:
    """A case's way through review: its arrival and withdrawal, the queue, the assignments and
    the opinion (the SLA gauges: `SlaWatch`), over the store, the locks, the emitter and the
    matcher."""

    def __init__(
        self,
        *,
        store: Store,
        locks: AggregateLocks,
        emitter: Emitter,
        keys: CaseKeys,
        matcher: Matcher,
        intake_base_url: str,
        service_name: str,
        information_expiry_days: float = 14.0,
        translation_due_days: float = 2.0,
    ) -> None:
        self.store = store
        self.locks = locks
        self.emitter = emitter
        # Each case's data under its own key; the service's keyring for what is no case's.
        self.keys = keys
        self.keyring = keys.keyring
        self.seals = CaseSeals(store, keys)
        self.matcher = matcher
        self.intake_base_url = intake_base_url.rstrip("/")
        self.service = service_name
        self.access = AccessTrail(store=store, locks=locks, keys=keys)
        self.requests = InformationRequests(self, expiry_days=information_expiry_days)
        self.second = SecondReadings(
            store=store,
            locks=locks,
            emitter=emitter,
            keys=keys,
            matcher=matcher,
            access=self.access,
        )
        self.translations = Translations.beside(self.second, due_days=translation_due_days)
        self.sla = SlaWatch(self)

    # --- events in ---------------------------------------------------------------------------

    async def case_submitted(
        self, *, case: CaseSubmitted, traceparent: str, event_id: str = ""
    ) -> None:
        """Triage a submitted case and match it, or queue it; a replay changes nothing."""
        doc = CaseDoc(
            id=case.case_id,
            reference=case.reference,
            specialty=case.specialty,
            urgency=case.urgency,
            language=case.language,
            physician_institution=case.physician_institution,
            international_review=case.international_review,
            summary=case.summary,
            summary_event=event_id if case.summary is not None else None,  # sealed as it came
            submitted_at=case.submitted_at,
            case_url=case.case_url or f"{self.intake_base_url}/v1/cases/{case.case_id}",
            # Without a trace from intake, the trace this consumer runs in becomes the case's.
            traceparent=traceparent or current_traceparent().get("traceparent", ""),
            status=CaseStatus.MATCHING,
            round=0,
            queue_key=rules.queue_key(case.urgency, case.submitted_at, case.case_id),
            received_at=now(),
            patient_id=case.patient_id,
            key_ref=case.key_ref,
            partner_id=case.partner_id,
        )
        # Seen before, or withdrawn before it reached us (a tombstone): the stored case
        # decides. Decided together with the cases submitted to this copy meanwhile.
        await self.matcher.submitted(doc)

    async def case_claimed(self, *, claim: CaseClaimed) -> None:
        """A partner-filed case has its patient from now on: they read its trail here too."""
        async with self.locks.hold(lock_key("case", claim.case_id)):
            case = await self.store.case(claim.case_id)
            if case is None:
                # Its submission comes first on the same partition: it was dead-lettered, so
                # is this claim, to be replayed after it.
                raise PoisonMessage("a claim of a case review never received")
            if case.patient_id is None:
                await self.store.set_patient(claim.case_id, claim.patient_id)

    async def case_erased(self, *, erasure: CaseErased) -> None:
        """The case's key is destroyed: drop this copy of it, and mark the case erased (its
        opinions and decline reasons, sealed under that key, open nowhere any more)."""
        self.keys.forget(erasure.key_ref)
        await self.store.set_case_erased(erasure.case_id, erasure.erased_at)

    async def case_withdrawn(self, *, withdrawal: CaseWithdrawn) -> None:
        """Close a withdrawn case: leave the queue, cancel its assignment, free its reviewer.

        Withdrawn before its submission reached review (no order across topics), the case is
        kept as a tombstone, so the submission arriving later changes nothing.
        """
        case_id = withdrawal.case_id
        at = now()
        async with self.matcher.deciding(), self.locks.hold(lock_key("case", case_id)):
            case = await self.store.case(case_id)
            if case is None:
                tombstone = CaseDoc(
                    id=case_id,
                    status=CaseStatus.WITHDRAWN,
                    round=0,
                    withdrawn_at=withdrawal.withdrawn_at,
                    received_at=at,
                )
                await self.store.insert_case(tombstone)
            elif case.status != CaseStatus.WITHDRAWN:
                await self.store.set_case_withdrawn(case_id, withdrawal.withdrawn_at)
            known = case.round if case is not None else 0
            rounds = await self.store.assignments_of(case_id, known)
            for round_ in rounds:
                if round_.status not in (*ACTIVE, AssignmentStatus.CANCELLED):
                    continue  # cancelled already: a stop may have left it in its reviewer's load
                async with self.locks.hold(self.emitter.lock(round_.id)):
                    fresh = await self.store.assignment(round_.id)
                    if fresh is not None and fresh.status in ACTIVE:
                        await self.matcher.fence()
                        await self.store.cancel(fresh.id, at)
                        log.info("assignment cancelled", assignment_id=fresh.id)
                await self.matcher.release(round_.reviewer_id, round_.id)
            await self.second.withdrawn(rounds)
            await self.translations.closed(rounds)
            await self.matcher.offer_queue()

    # --- queue -------------------------------------------------------------------------------

    async def queue(
        self,
        *,
        specialty: Specialty | None = None,
        urgency: Urgency | None = None,
        cursor: str | None = None,
        limit: int,
    ) -> QueuePage:
        """A page of the cases nobody fits yet, urgent first, then oldest."""
        docs = await self.store.queue_page(
            specialty=specialty, urgency=urgency, after=cursor, limit=limit + 1
        )
        declined = await self.store.declined_by(list(docs[:limit]))
        return QueuePage.of(
            docs,
            limit,
            key=lambda d: d.queue_key or "",
            view=lambda d: d.view(declined[d.id]),
        )

    async def assign_from_queue(
        self, *, principal: Principal, case_id: str, body: AssignBody
    ) -> Assignment:
        """A coordinator assigns a waiting case by hand: every rule holds except capacity."""
        async with self.matcher.deciding(), self.locks.hold(lock_key("case", case_id)):
            case = await self.store.case(case_id)
            if case is None:
                raise not_found("case", "case-not-found")
            if case.status != CaseStatus.WAITING:
                raise rules.state_conflict(
                    f"The case is {case.status}, not waiting in the queue.", "case-not-waiting"
                )
            reviewer = await self.store.reviewer(body.reviewer_id)
            if reviewer is None:
                raise Problem(
                    404,
                    "reviewer-not-found",
                    "Not found",
                    f"There is no reviewer {body.reviewer_id}.",
                    errors=[{"field": "body.reviewer_id", "message": "unknown reviewer"}],
                )
            assignment_id = await self.matcher.assign_by_hand(case, reviewer, by=principal.sub)
        return await self.assignment(principal=principal, assignment_id=assignment_id)

    # --- assignments -------------------------------------------------------------------------

    async def assignments(
        self,
        *,
        principal: Principal,
        statuses: frozenset[AssignmentStatus] = frozenset(),
        overdue: bool | None = None,
        reviewer_id: str | None = None,
        case_id: str | None = None,
        brief: bool = False,
        cursor: str | None = None,
        limit: int,
    ) -> AssignmentPage:
        """A page of assignments, soonest due first: a reviewer's own, or all for coordinators;
        in any of `statuses` (none: every status). Coordinators are shown the matcher's
        rationale and the decline reasons, unless `brief`."""
        full = rules.is_coordinator(principal) and not brief
        at = now()
        docs, more = await self.store.assignments_page(
            reviewer_id=rules.assignments_reviewer(principal, reviewer_id),
            statuses=statuses,
            case_id=case_id,
            overdue_at=None if overdue is None else (overdue, at),
            after=cursor,
            limit=limit + 1,
            projection=LISTED if full else LISTED_FOR_REVIEWER,
        )
        if overdue:
            OVERDUE_ASSIGNMENTS.labels(self.service).set(await self.sla.count_overdue(at=at))
        reasons = {d.id: await self.seals.reason(d) for d in docs} if full else {}
        page = AssignmentPage.of(
            docs,
            limit,
            key=lambda d: d.sort_key,
            view=lambda d: d.view(at=at, coordinator=full, reason=reasons.get(d.id)),
        )
        if page.next_cursor is None and more is not None:
            page.next_cursor = more  # stopped at its budget: the rest is further on
        await self.access.declines_read(principal, page.items)
        return page

    async def _found(self, assignment_id: str) -> AssignmentDoc:
        doc = await self.store.assignment(assignment_id)
        if doc is None:
            raise not_found("assignment", "assignment-not-found")
        return doc

    async def _visible(self, principal: Principal, assignment_id: str) -> AssignmentDoc:
        doc = await self._found(assignment_id)
        rules.check_assignment_access(principal, doc.reviewer_id)
        return doc

    async def assignment(self, *, principal: Principal, assignment_id: str) -> Assignment:
        """One assignment, if the caller may see it (a decline's reason, shown to coordinators,
        is a read in the case's trail)."""
        doc = await self._visible(principal, assignment_id)
        coordinator = rules.is_coordinator(principal)
        reason = await self.seals.reason(doc) if coordinator else None
        view = doc.view(at=now(), coordinator=coordinator, reason=reason)
        await self.access.declines_read(principal, [view])
        return view

    async def accept(self, *, principal: Principal, assignment_id: str) -> Assignment:
        """The assigned reviewer accepts; accepting twice is a no-op."""
        async with self.matcher.deciding(), self.locks.hold(self.emitter.lock(assignment_id)):
            doc = await self._visible(principal, assignment_id)
            rules.check_specialist_may_start(specialist_waits(doc))
            if rules.may_accept(doc.status):
                await self.matcher.fence()
                at = now()
                seq = rules.next_seq([doc.seq])
                accepted = ReviewAccepted(
                    case_id=doc.case_id,
                    assignment_id=assignment_id,
                    reviewer_id=doc.reviewer_id,
                    accepted_at=at,
                    seq=seq,
                )
                await self.emitter.emit(
                    "review.accept",
                    accepted,
                    trace=doc.traceparent,
                    aggregate=assignment_id,
                    write=lambda events: self.store.accept(
                        assignment_id, at=at, seq=seq, events=events
                    ),
                )
                log.info("assignment accepted", assignment_id=assignment_id)
        return await self.assignment(principal=principal, assignment_id=assignment_id)

    async def decline(
        self, *, principal: Principal, assignment_id: str, body: DeclineBody
    ) -> Assignment:
        """The assigned reviewer declines; the case goes to the next best reviewer, or waits;
        then the queue is offered (cases and second readings nobody fitted), as after an
        opinion: the decline freed a place in the reviewer's load."""
        declined = False
        async with self.matcher.deciding():
            case_id = (await self._visible(principal, assignment_id)).case_id
            async with self.locks.hold(lock_key("case", case_id)):
                async with self.locks.hold(self.emitter.lock(assignment_id)):
                    doc = await self._visible(principal, assignment_id)
                    if declined := rules.may_decline(doc.status):
                        await self.matcher.fence()
                        await self._write_decline(doc, body)
                await self.translations.closed([doc])  # an international round's, if declined
                case = await self.store.case(case_id)
                if case is not None and case.status == CaseStatus.MATCHING:
                    await self.matcher.match(case)
            if declined:  # the reviewer has one case less, as after an opinion
                await self.matcher.offer_queue()
        if declined:  # its free-text reason is written: an entry (a replay writes nothing)
            await self.access.record(principal, case_id, "review.decline")
        return await self.assignment(principal=principal, assignment_id=assignment_id)

    async def _write_decline(self, doc: AssignmentDoc, body: DeclineBody) -> None:
        # The case is marked for matching first: if we stop before the decline is written, the
        # restart finds the round still assigned and puts the case back as it was.
        case = await self.store.case(doc.case_id)
        if case is not None and case.status == CaseStatus.ASSIGNED and case.assignment_id == doc.id:
            await self.store.set_case_matching(doc.case_id)
        at = now()
        seq = rules.next_seq([doc.seq])
        declined = ReviewDeclined(
            case_id=doc.case_id,
            assignment_id=doc.id,
            reviewer_id=doc.reviewer_id,
            declined_at=at,
            reason_code=body.reason_code.value,
            seq=seq,
        )
        sealed = None
        if body.reason is not None:
            ring = await self.seals.ring(doc.case_id)
            sealed = ring.seal(body.reason.encode(), rules.decline_aad(doc.id))
        decline = Decline(reason_code=body.reason_code, sealed_reason=sealed)
        await self.emitter.emit(
            "review.decline",
            declined,
            trace=doc.traceparent,
            aggregate=doc.id,
            write=lambda events: self.store.decline(
                doc.id, at=at, decline=decline, seq=seq, events=events
            ),
        )
        await self.matcher.release(doc.reviewer_id, doc.id, fenced=True)
        log.info("assignment declined", assignment_id=doc.id, reason_code=body.reason_code)

    # --- opinion -----------------------------------------------------------------------------

    async def post_opinion(
        self, *, principal: Principal, assignment_id: str, opinion: Opinion, second: bool = False
    ) -> tuple[OpinionVersion, bool]:
        """The accepted reviewer's opinion (version 1); the same one again is a replay. It goes
        to a second reader first if the coordinators' rules or the reviewer (`second`) ask."""
        async with self.matcher.deciding():
            async with self.locks.hold(self.emitter.lock(assignment_id)):
                doc = await self._visible(principal, assignment_id)
                rules.check_no_open_request(open_request=doc.open_request is not None)
                if not rules.may_write_first_opinion(doc.status):
                    first = doc.opinions[0]
                    rules.check_replay(_same(self.keyring, first, opinion))
                    return first.view(doc, await self.seals.opinion(doc, first)), False
                entry = await self._write_opinion(doc, opinion, 1, asked=second)
            await self.matcher.offer_queue()  # the reviewer has one case less
        await self.access.record(principal, doc.case_id, "opinion.create")
        return entry.view(doc, opinion), True

    async def correct_opinion(
        self, *, principal: Principal, assignment_id: str, opinion: Opinion
    ) -> OpinionVersion:
        """A correction: a new version, unless it repeats the latest one."""
        async with self.matcher.deciding(), self.locks.hold(self.emitter.lock(assignment_id)):
            doc = await self._visible(principal, assignment_id)
            rules.check_correctable(doc.status)
            latest = doc.opinions[-1]
            if _same(self.keyring, latest, opinion):
                return latest.view(doc, await self.seals.opinion(doc, latest))
            entry = await self._write_opinion(doc, opinion, latest.version + 1)
        await self.access.record(principal, doc.case_id, "opinion.correct")
        return entry.view(doc, opinion)

    async def opinion(
        self,
        *,
        principal: Principal,
        assignment_id: str,
        version: int | None = None,
        reason: str | None = None,
    ) -> OpinionVersion:
        """The latest (or a given) version of an assignment's opinion: its reviewer's, or a
        coordinator's for a stated reason (428 without one); the read, or its refusal, is an
        entry of the case's trail."""
        doc = await self._found(assignment_id)
        given = await self.access.check_read(principal, doc, "opinion.read", reason)
        chosen = [v for v in doc.opinions if version is None or v.version == version]
        if not chosen:
            what = "opinion" if version is None else "opinion version"
            raise not_found(what, "no-opinion")
        opened = await self.seals.opinion(doc, chosen[-1])
        ring = None if given is None else await self.seals.ring(doc.case_id)
        await self.access.record(principal, doc.case_id, "opinion.read", reason=given, ring=ring)
        return chosen[-1].view(doc, opened)

    async def _write_opinion(
        self, doc: AssignmentDoc, opinion: Opinion, version: int, *, asked: bool = False
    ) -> OpinionEntry:
        """Store an opinion version and its sealed `completed` event in one write (or, while
        a second reader is to read it, the `second-reading-requested` event instead)."""
        reviewer = await self.store.reviewer(doc.reviewer_id)
        display_name = reviewer.display_name if reviewer else doc.reviewer_id
        at = now()
        seq = rules.next_seq([doc.seq])
        reading = await self.second.plan(doc, version, asked=asked, at=at)
        back = None if reading else await self.translations.back(doc, version, at=at, seq=seq)
        agreed = doc.second_reading.display_name if doc.second_reading else None
        sealed = rules.sealed_content(opinion, version, display_name, doc.specialty, agreed)
        ring = await self.seals.ring(doc.case_id)

        def completed(event_id: str) -> ReviewCompleted:
            return ReviewCompleted(
                case_id=doc.case_id,
                assignment_id=doc.id,
                reviewer_id=doc.reviewer_id,
                specialty=doc.specialty,
                version=version,
                completed_at=at,
                opinion=ring.seal_json(sealed, aad=event_id),
                seq=seq,
                report_seq=doc.report_seq(seq),
            )

        if back is not None:  # kept in review until translated into the patient's language
            event = back[0].event
        elif reading is None:
            event = self.emitter.event("review.opinion", completed, trace=doc.traceparent)
        else:  # kept in review until the second reader agrees
            reader = await contacts.recipient(self.store, self.keyring, reading.reviewer_id)
            held = self.second.requested(doc, reading, at=at, seq=seq, ring=ring, to=reader)
            event = self.emitter.event("review.second-reading", held, trace=doc.traceparent)
        both = back[1] if back else None  # the round's translations, the one back queued
        if reading is not None:  # filed first, a reading nobody fitted is offered again even
            # if a stop follows its write (filed but never written: `rematch` drops it)
            await self.second.file(doc, reading)
        await self.matcher.fence()
        kid, key = self.keyring.derive(rules.OPINION_DIGEST_PURPOSE)
        entry = OpinionEntry(
            version=version,
            digest=rules.opinion_digest(kid, key, opinion),
            completed_at=at,
            event_id=event.id,
            sealed=ring.seal_json(opinion, rules.opinion_aad(doc.id, version)),
        )
        await self.emitter.write(
            lambda events: self.store.add_opinion(
                doc.id, entry=entry, seq=seq, events=events, reading=reading, translations=both
            ),
            [event],
            aggregate=doc.id,
        )
        if reading is not None:
            await self.second.count(doc, reading)
        if back is not None:
            await self.translations.counted(back[0].entry)
        if version == 1:  # the reviewer read above, in this section: its load is as read
            await self.matcher.release(doc.reviewer_id, doc.id, read=reviewer, fenced=True)
            stage_reached("assigned_to_completed", since=doc.assigned_at, at=at)
        log.info("opinion recorded", assignment_id=doc.id, version=version)
        return entry


class SlaWatch:
    """Review's SLA gauges, kept fresh by the copy holding the `overdue` lease: the open work
    read from the reviewer directory, what is overdue and due today by specialty, and the
    expiry of unanswered requests for more information."""

    def __init__(self, review: ReviewService) -> None:
        self.review = review
        # Exported at 0 from the start: the lateness dashboard and its alert read it.
        OVERDUE_TRANSLATIONS.labels(review.service).set(0)

    async def refresh(self) -> int:
        """Recount overdue assignments (in all and by specialty), those due today and the
        overdue translations into the gauges; returns the overdue assignments' count."""
        at = now()
        review = self.review
        work = await self.open_work()
        overdue = Counter(d.specialty for d in work if d.overdue(at))
        today = Counter(d.specialty for d in work if rules.is_due_today(d.status, d.due_at, at))
        OVERDUE_ASSIGNMENTS.labels(review.service).set(overdue.total())
        late = await overdue_translations(review.store, at=at)
        OVERDUE_TRANSLATIONS.labels(review.service).set(late)
        await review.requests.sweep(work, at=at)
        for specialty in Specialty:  # every specialty: a bounded label, 0 included
            OVERDUE_BY_SPECIALTY.labels(review.service, specialty.value).set(overdue[specialty])
            DUE_TODAY.labels(review.service, specialty.value).set(today[specialty])
        return overdue.total()

    async def count_overdue(self, *, at: datetime) -> int:
        """Open assignments past due."""
        return sum(d.overdue(at) for d in await self.open_work())

    async def open_work(self) -> list[AssignmentDoc]:
        """Open assignments: each reviewer's open ones, read by `_id`, so the cost is the
        directory and the open work, not every assignment ever made. An ended one still listed
        (a stop between its end and its release) is released on the way, and the place it frees
        offered to the queue, as after a decline or an opinion."""
        store, matcher = self.review.store, self.review.matcher
        reviewers = await store.all_reviewers()
        listed = await asyncio.gather(*(store.open_assignments(r) for r in reviewers))
        pairs = [(r.id, doc) for r, docs in zip(reviewers, listed, strict=True) for doc in docs]
        if ended := [(rid, doc.id) for rid, doc in pairs if doc.status not in ACTIVE]:
            async with matcher.deciding():
                for reviewer_id, assignment_id in ended:
                    await matcher.release(reviewer_id, assignment_id)
                await matcher.offer_queue()
        return [doc for _, doc in pairs if doc.status in ACTIVE]

    async def watch(self, *, interval: float) -> None:
        """Keep the overdue gauge fresh until cancelled."""
        while True:
            try:
                await self.refresh()
            except STORE_ERRORS as exc:
                log.warning("overdue count failed", error=type(exc).__name__)
            await asyncio.sleep(interval)


class InformationRequests:
    """Requests for more information: the specialist of an accepted review asks the patient
    (or the filing partner) for a record or a precision, and the SLA clock stands until the
    answer (intake's `avis.case.information-provided.v1`) or the request's expiry; then it
    resumes with the due date moved by exactly the pause and filed again in the day buckets,
    and `avis.review.resumed.v1` sends the case back to review. Every write runs inside the
    matcher's section, as every write of an assignment's state does (see the module's
    docstring), which also numbers the events one after the other."""

    def __init__(self, review: ReviewService, *, expiry_days: float) -> None:
        self.review = review
        self.expiry_days = expiry_days
        # Exported at 0 from the start: the first expiry then counts in `increase()`.
        INFORMATION_EXPIRED.labels(review.service)

    async def ask(
        self, *, principal: Principal, assignment_id: str, body: InformationRequestBody
    ) -> Assignment:
        """The accepted reviewer asks; the question is sealed under the case's key, here and
        on the topic (409 if not accepted or a request is open already)."""
        review = self.review
        async with review.matcher.deciding(), review.locks.hold(review.emitter.lock(assignment_id)):
            doc = await review._visible(principal, assignment_id)
            rules.check_may_ask(doc.status, open_request=doc.open_request is not None)
            at = now()
            seq = rules.next_seq([doc.seq])
            request_id = rules.request_id_for(doc.id, len(doc.requests) + 1)
            expires = rules.request_expiry(at, self.expiry_days)
            question = InformationQuestion(text=body.text)
            ring = await review.seals.ring(doc.case_id)

            def requested(event_id: str) -> InformationRequested:
                return InformationRequested(
                    case_id=doc.case_id,
                    assignment_id=doc.id,
                    reviewer_id=doc.reviewer_id,
                    request_id=request_id,
                    requested_at=at,
                    expires_at=expires,
                    question=ring.seal_json(question, aad=event_id),
                    seq=seq,
                )

            event = review.emitter.event("review.information.ask", requested, trace=doc.traceparent)
            entry = RequestEntry(
                id=request_id,
                requested_at=at,
                expires_at=expires,
                sealed=ring.seal_json(question, rules.information_aad(doc.id, request_id)),
            )
            await review.matcher.fence()
            await review.emitter.write(
                lambda events: review.store.information.ask(
                    doc.id, entry=entry, seq=seq, events=events
                ),
                [event],
                aggregate=doc.id,
            )
            log.info("information requested", assignment_id=doc.id, request_id=request_id)
        await review.access.record(principal, doc.case_id, "information.create")
        return await review.assignment(principal=principal, assignment_id=assignment_id)

    async def provided(self, *, provided: InformationProvided) -> None:
        """The patient answered: the clock resumes at the answer's time; a redelivery, or an
        answer to a request no longer open, changes nothing."""
        review = self.review
        assignment_id = rules.assignment_of_request(provided.request_id)
        async with review.matcher.deciding(), review.locks.hold(review.emitter.lock(assignment_id)):
            doc = await review.store.assignment(assignment_id)
            if doc is None or doc.case_id != provided.case_id:
                log.warning("answer to an unknown request", request_id=provided.request_id)
                return
            await self._resume(doc, provided.request_id, at=provided.provided_at, answered=True)

    async def sweep(self, work: list[AssignmentDoc], *, at: datetime) -> None:
        """Expire the open requests of `work` (the open assignments) past their time, and count
        those still waiting; run by the overdue job's holder."""
        review = self.review
        waiting = 0
        for listed in work:
            entry = listed.open_request
            if entry is None:
                continue
            if entry.expires_at > at:
                waiting += 1
                continue
            async with review.matcher.deciding(), review.locks.hold(review.emitter.lock(listed.id)):
                doc = await review.store.assignment(listed.id)
                if doc is not None and doc.status in ACTIVE:
                    await self._resume(doc, entry.id, at=entry.expires_at, answered=False)
        INFORMATION_WAITING.labels(review.service).set(waiting)

    async def _resume(
        self, doc: AssignmentDoc, request_id: str, *, at: datetime, answered: bool
    ) -> None:
        """Close an open request (answered, or expired) and resume the clock; the caller is in
        the matcher's section and holds the assignment."""
        review = self.review
        entry = next((r for r in doc.requests if r.id == request_id), None)
        if entry is None or entry.state is not RequestState.OPEN or doc.paused_since is None:
            log.info("request no longer open", assignment_id=doc.id, request_id=request_id)
            return
        due, paused = rules.resumed_due(doc.due_at, doc.paused_since, at)
        closed = {"answered_at" if answered else "expired_at": at, "paused_seconds": paused}
        requests = [r.model_copy(update=closed) if r.id == request_id else r for r in doc.requests]
        moved = doc.model_copy(update={"due_at": due, "sort_key": rules.sort_key(due, doc.id)})
        seq = rules.next_seq([doc.seq])
        resumed = ReviewResumed(
            case_id=doc.case_id,
            assignment_id=doc.id,
            reviewer_id=doc.reviewer_id,
            request_id=request_id,
            resumed_at=at,
            due_at=due,
            paused_seconds=paused,
            outcome="answered" if answered else "expired",
            seq=seq,
        )
        await review.matcher.fence()
        await review.store.file_due(moved)  # filed before the round points to it
        await review.emitter.emit(
            "review.information.resume",
            resumed,
            trace=doc.traceparent,
            aggregate=doc.id,
            write=lambda events: review.store.information.resume(
                moved, requests=requests, seq=seq, events=events
            ),
        )
        if moved.sort_key != doc.sort_key:
            await review.store.information.unfile_due(doc)
        if not answered:
            INFORMATION_EXPIRED.labels(review.service).inc()
        log.info("review resumed", assignment_id=doc.id, answered=answered, paused=paused)

    async def listed(
        self, *, state: RequestState | None, cursor: str | None, limit: int
    ) -> InformationRequestPage:
        """The requests of the open assignments (in `state`, if given), soonest to expire
        first: read from the reviewers' open work, as the overdue list is."""
        found = sorted(
            (
                (rules.sort_key(r.expires_at, r.id), r.view(d))
                for d in await self.review.sla.open_work()
                for r in d.requests
                if state is None or r.state is state
            ),
            key=lambda pair: pair[0],
        )
        after = [pair for pair in found if cursor is None or pair[0] > cursor]
        return InformationRequestPage.of(
            after[: limit + 1], limit, key=lambda pair: pair[0], view=lambda pair: pair[1]
        )


class CaseSeals:
    """A case's sealed values in review: sealed under the case's key, opened by their key id
    (what was sealed before per-case keys opens with the service's keyring)."""

    def __init__(self, store: Store, keys: CaseKeys) -> None:
        self.store = store
        self.keys = keys

    async def ring(self, case_id: str) -> Keyring:
        """The ring that seals a case's data: led by the case's key (a 410 once erased)."""
        case = await self.store.case(case_id)
        return await self.keys.ring(case.key_ref if case is not None else None)

    async def opinion(self, doc: AssignmentDoc, entry: OpinionEntry) -> Opinion:
        """A version of the opinion, opened (in clear for a version stored before sealing);
        a 410 once the case is erased."""
        if entry.sealed is None:
            return Opinion.model_validate(entry.opinion)
        aad = rules.opinion_aad(doc.id, entry.version)
        return (await self.keys.opening(entry.sealed)).open_model(entry.sealed, aad, Opinion)

    async def reason(self, doc: AssignmentDoc) -> str | None:
        """A decline's free-text reason, opened (in clear for one stored before sealing; none
        once the case is erased)."""
        decline = doc.decline
        if decline is None or decline.sealed_reason is None:
            return decline.reason if decline else None
        try:
            ring = await self.keys.opening(decline.sealed_reason)
        except CaseKeyDestroyed:
            return None
        return ring.open(decline.sealed_reason, rules.decline_aad(doc.id)).decode()


class AccessTrail(TrailWriter):
    """Review's access trail of each case (`avis.shared.access_log.TrailWriter`): one entry per
    read or write of its opinions and its decline reasons by a person, and the refusals (403,
    428) of a read of its opinion. No entry is appended while the matching section or an
    aggregate's lock is held."""

    def __init__(self, *, store: Store, locks: AggregateLocks, keys: CaseKeys) -> None:
        super().__init__(
            append=store.audit, locks=locks, keyring=keys.keyring, fold=rules.fold_window
        )
        self.store = store
        self.keys = keys

    async def check_read(
        self, principal: Principal, doc: AssignmentDoc, action: str, reason: str | None
    ) -> str | None:
        """The reason a coordinator gives for `action` on an assignment, where one is needed (428
        without it), if `principal` may read it at all (403 otherwise); a refusal is recorded."""
        try:
            rules.check_assignment_access(principal, doc.reviewer_id)
            return check_reason(principal, reason) if rules.needs_reason(action) else None
        except Problem as refused:
            if refused.status in rules.AUDITED_REFUSALS:
                await self.record(principal, doc.case_id, action, refused=refused.status)
            raise

    async def declines_read(self, principal: Principal, shown: Iterable[Assignment]) -> None:
        """Record a read of a decline's reason on each case whose reason `shown` holds (only
        coordinators are shown one)."""
        cases = dict.fromkeys(a.case_id for a in shown if a.decline_reason is not None)
        for case_id in cases:
            await self.record(principal, case_id, "decline.read")

    async def access_log(
        self, *, principal: Principal, case_id: str, cursor: int | None, limit: int
    ) -> AccessLog:
        """Who read or wrote the case's opinions and decline reasons, oldest first, in plain
        words."""
        page = await self.trail(principal=principal, case_id=case_id, cursor=cursor, limit=limit)
        return page.view(principal, await reasons_ring(self.keys, page), limit)

    async def trail(
        self, *, principal: Principal, case_id: str, cursor: int | None, limit: int
    ) -> TrailPage:
        """A page of the case's trail (one entry more than `limit` when more remain), for
        coordinators and the case's patient (404 for anyone else, as for an unknown case)."""
        case = await self.store.case(case_id)
        if case is None or not rules.may_read_trail(principal, case.patient_id):
            raise not_found("case", "case-not-found")
        return await self.store.trail_page(case_id, cursor or 0, limit + 1)


class DirectoryService:
    """The reviewer directory: coordinators add and change reviewers; a reviewer with room
    again is offered the queue through the matcher."""

    def __init__(
        self, *, store: Store, locks: AggregateLocks, matcher: Matcher, keyring: Keyring
    ) -> None:
        self.store = store
        self.locks = locks
        self.matcher = matcher
        self.keyring = keyring  # seals the reviewers' work addresses (no case's data)

    async def create_reviewer(self, *, body: ReviewerIn) -> tuple[Reviewer, bool]:
        """Add a reviewer; the same reviewer again is a no-op. Returns it and whether it is new."""
        contact = contacts.sealed_contact(self.keyring, body.id, body.email)
        doc = ReviewerDoc.new(body, now(), contact)
        async with self.matcher.deciding():
            async with self.locks.hold(lock_key("reviewer", body.id)):
                created = await self.store.insert_reviewer(doc)
                existing = None if created else await self.store.reviewer(body.id)
            if not created:
                kept = contacts.contact_of(self.keyring, existing) if existing else None
                same_email = (kept.email if kept else None) == body.email
                if existing is None or not existing.same_as(body) or not same_email:
                    raise Problem(
                        409,
                        "reviewer-exists",
                        "Conflict",
                        f"Reviewer {body.id} already exists with other details; "
                        "change them with PATCH.",
                    )
            else:
                await self.matcher.offer_queue()
        # Read again: the queue offered to a new reviewer may have given them cases.
        return (await self.store.reviewer(body.id) or doc).view(), created

    async def update_reviewer(self, *, reviewer_id: str, patch: ReviewerPatch) -> Reviewer:
        """Change a reviewer; a freed or widened reviewer is offered the queue."""
        async with self.matcher.deciding():
            # The reviewer's lock covers its own write only: the queue offered next takes it
            # again for each assignment it counts.
            async with self.locks.hold(lock_key("reviewer", reviewer_id)):
                if await self.store.reviewer(reviewer_id) is None:
                    raise not_found("reviewer", "reviewer-not-found")
                changes = contacts.sealed_changes(self.keyring, reviewer_id, patch.changes())
                if changes:
                    await self.store.update_reviewer(reviewer_id, changes, now())
            if changes:
                await self.matcher.offer_queue()
            doc = await self.store.reviewer(reviewer_id)
        if doc is None:
            raise not_found("reviewer", "reviewer-not-found")
        return doc.view()

    async def reviewer(self, *, principal: Principal, reviewer_id: str) -> Reviewer:
        """One reviewer: coordinators see anyone, a reviewer themself."""
        rules.check_reviewer_access(principal, reviewer_id)
        doc = await self.store.reviewer(reviewer_id)
        if doc is None:
            raise not_found("reviewer", "reviewer-not-found")
        return doc.view()

    async def reviewers(
        self,
        *,
        specialty: Specialty | None = None,
        language: Language | None = None,
        active: bool | None = None,
        cursor: str | None = None,
        limit: int,
    ) -> ReviewerPage:
        """A page of the directory, by id."""
        docs = await self.store.reviewers_page(
            specialty=specialty, language=language, active=active, after=cursor, limit=limit + 1
        )
        return ReviewerPage.of(docs, limit, key=lambda d: d.id, view=ReviewerDoc.view)

    async def translators(
        self, *, language: Language | None = None, cursor: str | None = None, limit: int
    ) -> TranslatorPage:
        """A page of the translators' directory (of `language`, when given), by id, each with
        their load: the translations chosen for them or taken, not done yet."""
        docs = await self.store.translations.translators_page(
            language=language, after=cursor, limit=limit + 1
        )
        return TranslatorPage.of(docs, limit, key=lambda d: d.id, view=TranslatorDoc.view)
