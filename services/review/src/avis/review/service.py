"""Review's use cases: triage and matching of submitted cases, the queue, accept, decline,
opinion and correction, the directory and the SLA gauge. Each one reads through the store,
decides with `rules`, writes through the store and publishes through the emitter.

Concurrency: the store does not serialise concurrent writers, so every write holds its
aggregate's lock (`case:<id>`, the assignment id, `reviewer:<id>`), and every matching decision
(read the loads, pick, write the assignment) runs under the one `matching` lock of the process.
Locks are always taken in the order matching -> case -> assignment. Across several review
instances this relies on a single active matcher: review runs as one consumer of
`case-submitted` with one HTTP instance for coordinators and reviewers, or, when scaled out,
all writers of a reviewer's load must be routed to one instance.
"""

import asyncio
from datetime import datetime

import structlog
from prometheus_client import Gauge

from avis.review import rules
from avis.review.models import (
    ACTIVE,
    AssignBody,
    Assignment,
    AssignmentPage,
    AssignmentStatus,
    CaseStatus,
    Considered,
    DeclineBody,
    Opinion,
    OpinionVersion,
    QueuePage,
    Rationale,
    Reviewer,
    ReviewerIn,
    ReviewerPage,
    ReviewerPatch,
    assignment_view,
    opinion_view,
    queued_view,
    reviewer_view,
)
from avis.review.rules import MATCHING_LOCK, CaseNeeds, ReviewerFit, Sla, case_lock
from avis.review.store import (
    AssignmentDoc,
    CaseDoc,
    Decline,
    OpinionEntry,
    ReviewerDoc,
    Store,
)
from avis.shared.clock import now
from avis.shared.emit import Emitter
from avis.shared.events import (
    CaseSubmitted,
    CaseWithdrawn,
    Language,
    ReviewAccepted,
    ReviewAssigned,
    ReviewCompleted,
    ReviewDeclined,
    Specialty,
    Urgency,
)
from avis.shared.mongo import STORE_ERRORS, AggregateLocks
from avis.shared.observability import current_traceparent
from avis.shared.problems import Problem
from avis.shared.sealing import Keyring
from avis.shared.security import Principal

log = structlog.get_logger("avis.review")

SOURCE = "/avis/review"

OVERDUE_ASSIGNMENTS = Gauge(
    "avis_review_overdue_assignments",
    "Assignments past their due date and not yet answered",
    ["service"],
)


def needs_of(case: CaseDoc, declined_by: list[str]) -> CaseNeeds:
    """The matching needs of a stored case."""
    triage = case.triage()
    return CaseNeeds(
        specialty=triage.specialty.value,
        language=triage.language.value,
        physician_institution=case.physician_institution,
        declined_by=frozenset(declined_by),
    )


def fit_of(reviewer: ReviewerDoc, load: int) -> ReviewerFit:
    """The matching view of a stored reviewer."""
    return ReviewerFit(
        id=reviewer.id,
        specialties=frozenset(s.value for s in reviewer.specialties),
        languages=frozenset(lang.value for lang in reviewer.languages),
        institution_code=reviewer.institution_code,
        capacity=reviewer.capacity,
        load=load,
        active=reviewer.active,
    )


def declined_in(rounds: list[AssignmentDoc]) -> list[str]:
    """The reviewers who declined a case, first round first."""
    return [r.reviewer_id for r in rounds if r.status == AssignmentStatus.DECLINED]


class ReviewService:
    """Review's operations over its store, its locks and its emitter."""

    def __init__(
        self,
        *,
        store: Store,
        locks: AggregateLocks,
        emitter: Emitter,
        keyring: Keyring,
        sla: Sla,
        intake_base_url: str,
        service_name: str,
    ) -> None:
        self.store = store
        self.locks = locks
        self.emitter = emitter
        self.keyring = keyring
        self.sla = sla
        self.intake_base_url = intake_base_url.rstrip("/")
        self.service = service_name

    # --- events in ---------------------------------------------------------------------------

    async def case_submitted(self, *, case: CaseSubmitted, traceparent: str) -> None:
        """Triage a submitted case and match it, or queue it; a replay changes nothing."""
        doc = CaseDoc(
            id=case.case_id,
            reference=case.reference,
            specialty=case.specialty,
            urgency=case.urgency,
            language=case.language,
            physician_institution=case.physician_institution,
            submitted_at=case.submitted_at,
            case_url=case.case_url or f"{self.intake_base_url}/v1/cases/{case.case_id}",
            # Without a trace from intake, the trace this consumer runs in becomes the case's.
            traceparent=traceparent or current_traceparent().get("traceparent", ""),
            status=CaseStatus.MATCHING,
            round=0,
            queue_key=rules.queue_key(case.urgency, case.submitted_at, case.case_id),
            received_at=now(),
        )
        async with self.locks.hold(MATCHING_LOCK), self.locks.hold(case_lock(case.case_id)):
            # Seen before, or withdrawn before it reached us (a tombstone): the stored case
            # decides.
            await self.store.insert_case(doc)
            stored = await self.store.case(case.case_id)
            if stored is not None and stored.status == CaseStatus.MATCHING:
                await self._match(stored)

    async def case_withdrawn(self, *, withdrawal: CaseWithdrawn) -> None:
        """Close a withdrawn case: leave the queue, cancel its assignment, free its reviewer.

        Withdrawn before its submission reached review (no order across topics), the case is
        kept as a tombstone, so the submission arriving later changes nothing.
        """
        case_id = withdrawal.case_id
        at = now()
        async with self.locks.hold(MATCHING_LOCK), self.locks.hold(case_lock(case_id)):
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
            for round_ in await self.store.assignments_of(case_id, known):
                if round_.status not in ACTIVE:
                    continue
                async with self.locks.hold(round_.id):
                    fresh = await self.store.assignment(round_.id)
                    if fresh is not None and fresh.status in ACTIVE:
                        await self.store.cancel(fresh.id, at)
                        log.info("assignment cancelled", assignment_id=fresh.id)
                await self._release(round_.reviewer_id, round_.id)
            await self._drain_locked()

    # --- matching ----------------------------------------------------------------------------

    async def _match(self, case: CaseDoc, *, from_queue: bool = False) -> str | None:
        """Assign `case` to the best reviewer or leave it waiting; caller holds matching+case."""
        rounds = await self.store.assignments_of(case.id, case.round)
        for ended in (r for r in rounds if r.status in rules.ENDED):
            # A stop between an end and its release left the reviewer's load too high.
            await self._release(ended.reviewer_id, ended.id)
        live = next((r for r in rounds if r.status not in rules.ENDED), None)
        if live is not None:
            # A round survives from an attempt that stopped half-way: keep it, counted once.
            async with self.locks.hold(rules.reviewer_lock(live.reviewer_id)):
                await self.store.add_open(live.reviewer_id, live.id)
            await self.store.set_case_assigned(
                case.id, assignment_id=live.id, round_=live.round, left_queue=False
            )
            return live.id
        # Loads only grow under the matching lock the caller holds, so the reviewers' own
        # documents read now stay an upper bound until this decision is written.
        reviewers = await self.store.active_reviewers_of(case.triage().specialty.value)
        decision = rules.match(
            needs_of(case, declined_in(rounds)), [fit_of(r, r.load) for r in reviewers]
        )
        at = now()
        rationale = Rationale(
            rule=decision.rule.value,
            chosen=decision.chosen,
            candidates=list(decision.candidates),
            decided_at=at,
            decided_by=rules.MATCHER,
        )
        if decision.chosen is None:
            if not (from_queue and case.status == CaseStatus.WAITING):
                await self.store.set_case_waiting(
                    case.id, since=case.waiting_since or at, last_attempt=rationale
                )
                log.info("case waits in the queue", case_id=case.id)
            return None
        round_ = rules.next_round(case.round, (r.round for r in rounds))
        return await self._assign(case, round_, decision.chosen, rationale, at)

    async def _assign(
        self, case: CaseDoc, round_: int, reviewer_id: str, rationale: Rationale, at: datetime
    ) -> str:
        """Write a new assignment round with its `assigned` event; caller holds matching+case."""
        triage = case.triage()
        assignment_id = rules.assignment_id_for(case.id, round_)
        due = rules.due_at(at, triage.urgency, self.sla)
        assignment = AssignmentDoc(
            id=assignment_id,
            case_id=case.id,
            round=round_,
            reviewer_id=reviewer_id,
            status=AssignmentStatus.ASSIGNED,
            reference=case.reference,
            specialty=triage.specialty,
            urgency=triage.urgency,
            language=triage.language,
            case_url=case.case_url,
            traceparent=case.traceparent,
            assigned_at=at,
            due_at=due,
            sort_key=rules.sort_key(due, assignment_id),
            rationale=rationale,
        )
        assigned = ReviewAssigned(
            case_id=case.id,
            assignment_id=assignment_id,
            reviewer_id=reviewer_id,
            specialty=triage.specialty,
            assigned_at=at,
            due_at=due,
        )
        await self.store.file_due(assignment)
        async with self.locks.hold(assignment_id):
            await self.emitter.emit(
                "review.assign",
                assigned,
                aggregate=assignment_id,
                trace=case.traceparent,
                write=lambda events: self.store.insert_assignment(assignment, events),
            )
        # Counted after the round exists (a stop in between: the next matching of this case
        # finds the round live and counts it), before the case leaves matching.
        async with self.locks.hold(rules.reviewer_lock(reviewer_id)):
            await self.store.add_open(reviewer_id, assignment_id)
        await self.store.set_case_assigned(
            case.id, assignment_id=assignment_id, round_=round_, left_queue=True
        )
        log.info(
            "case assigned",
            case_id=case.id,
            assignment_id=assignment_id,
            reviewer_id=reviewer_id,
            rule=rationale.rule,
        )
        return assignment_id

    async def _release(self, reviewer_id: str, assignment_id: str) -> None:
        """Stop counting an ended assignment in its reviewer's load (if it still is)."""
        async with self.locks.hold(rules.reviewer_lock(reviewer_id)):
            reviewer = await self.store.reviewer(reviewer_id)
            if reviewer is not None and assignment_id in reviewer.open_assignments:
                await self.store.remove_open(reviewer_id, assignment_id)

    async def _drain_locked(self) -> int:
        """Offer every waiting case, in queue order, to reviewers; caller holds matching."""
        assigned = 0
        for waiting in await self.store.cases_in(CaseStatus.WAITING):
            async with self.locks.hold(case_lock(waiting.id)):
                case = await self.store.case(waiting.id)
                if case is not None and case.status == CaseStatus.WAITING:
                    assigned += await self._match(case, from_queue=True) is not None
        return assigned

    async def drain_queue(self) -> int:
        """Offer the queue to reviewers who may have freed up; returns how many were assigned."""
        async with self.locks.hold(MATCHING_LOCK):
            return await self._drain_locked()

    async def recover(self) -> None:
        """Finish matchings a stopped process left half-way, then offer the queue.

        Store outages propagate (start-up retries them); anything else is logged and left for
        the next start, so one odd case never keeps the service from connecting.
        """
        async with self.locks.hold(MATCHING_LOCK):
            for pending in await self.store.cases_in(CaseStatus.MATCHING):
                async with self.locks.hold(case_lock(pending.id)):
                    try:
                        case = await self.store.case(pending.id)
                        if case is not None and case.status == CaseStatus.MATCHING:
                            await self._match(case)
                    except STORE_ERRORS:
                        raise
                    except Exception as exc:
                        log.error(
                            "matching not recovered", case_id=pending.id, error=type(exc).__name__
                        )
            await self._drain_locked()

    # --- reviewer directory ------------------------------------------------------------------

    async def create_reviewer(self, *, body: ReviewerIn) -> tuple[Reviewer, bool]:
        """Add a reviewer; the same reviewer again is a no-op. Returns it and whether it is new."""
        doc = ReviewerDoc.new(body, now())
        async with self.locks.hold(MATCHING_LOCK):
            async with self.locks.hold(rules.reviewer_lock(body.id)):
                created = await self.store.insert_reviewer(doc)
                existing = None if created else await self.store.reviewer(body.id)
            if not created:
                if existing is None or not existing.same_as(body):
                    raise Problem(
                        409,
                        "reviewer-exists",
                        "Conflict",
                        f"Reviewer {body.id} already exists with other details; "
                        "change them with PATCH.",
                    )
                doc = existing
            else:
                await self._drain_locked()
        return reviewer_view(doc, await self.store.load(body.id)), created

    async def update_reviewer(self, *, reviewer_id: str, patch: ReviewerPatch) -> Reviewer:
        """Change a reviewer; a freed or widened reviewer is offered the queue."""
        async with self.locks.hold(MATCHING_LOCK):
            # The reviewer's lock covers its own write only: the drain that follows takes it
            # again for each assignment it counts.
            async with self.locks.hold(rules.reviewer_lock(reviewer_id)):
                if await self.store.reviewer(reviewer_id) is None:
                    raise rules.not_found("reviewer", "reviewer-not-found")
                changes = patch.changes()
                if changes:
                    await self.store.update_reviewer(reviewer_id, changes, now())
            if changes:
                await self._drain_locked()
            doc = await self.store.reviewer(reviewer_id)
        if doc is None:
            raise rules.not_found("reviewer", "reviewer-not-found")
        return reviewer_view(doc, await self.store.load(reviewer_id))

    async def reviewer(self, *, principal: Principal, reviewer_id: str) -> Reviewer:
        """One reviewer: coordinators see anyone, a reviewer themself."""
        rules.check_reviewer_access(principal, reviewer_id)
        doc = await self.store.reviewer(reviewer_id)
        if doc is None:
            raise rules.not_found("reviewer", "reviewer-not-found")
        return reviewer_view(doc, await self.store.load(reviewer_id))

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
        return ReviewerPage.of(
            docs, limit, key=lambda d: d.id, view=lambda d: reviewer_view(d, d.load)
        )

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
            view=lambda d: queued_view(d, declined[d.id]),
        )

    async def assign_from_queue(
        self, *, principal: Principal, case_id: str, body: AssignBody
    ) -> Assignment:
        """A coordinator assigns a waiting case by hand: every rule holds except capacity."""
        async with self.locks.hold(MATCHING_LOCK), self.locks.hold(case_lock(case_id)):
            case = await self.store.case(case_id)
            if case is None:
                raise rules.not_found("case", "case-not-found")
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
            rounds = await self.store.assignments_of(case_id, case.round)
            fit = fit_of(reviewer, await self.store.load(body.reviewer_id))
            rules.check_eligible(needs_of(case, declined_in(rounds)), fit)
            at = now()
            rationale = Rationale(
                rule=rules.Rule.COORDINATOR.value,
                chosen=body.reviewer_id,
                candidates=[
                    Considered(
                        reviewer_id=fit.id, load=fit.load, capacity=fit.capacity, excluded=None
                    )
                ],
                decided_at=at,
                decided_by=principal.sub,
            )
            round_ = rules.next_round(case.round, (r.round for r in rounds))
            assignment_id = await self._assign(case, round_, body.reviewer_id, rationale, at)
        return await self.assignment(principal=principal, assignment_id=assignment_id)

    # --- assignments -------------------------------------------------------------------------

    async def assignments(
        self,
        *,
        principal: Principal,
        status: AssignmentStatus | None = None,
        overdue: bool | None = None,
        reviewer_id: str | None = None,
        case_id: str | None = None,
        cursor: str | None = None,
        limit: int,
    ) -> AssignmentPage:
        """A page of assignments, soonest due first: a reviewer's own, or all for coordinators."""
        coordinator = rules.is_coordinator(principal)
        at = now()
        docs, more = await self.store.assignments_page(
            reviewer_id=rules.assignments_reviewer(principal, reviewer_id),
            status=status,
            case_id=case_id,
            overdue_at=None if overdue is None else (overdue, at),
            after=cursor,
            limit=limit + 1,
        )
        if overdue:
            OVERDUE_ASSIGNMENTS.labels(self.service).set(await self.count_overdue(at))
        page = AssignmentPage.of(
            docs, limit, key=lambda d: d.sort_key, view=lambda d: self._view(d, at, coordinator)
        )
        if page.next_cursor is None and more is not None:
            page.next_cursor = more  # stopped at its budget: the rest is further on
        return page

    @staticmethod
    def _view(doc: AssignmentDoc, at: datetime, coordinator: bool) -> Assignment:
        overdue = rules.is_overdue(doc.status, doc.due_at, at)
        return assignment_view(doc, overdue=overdue, coordinator=coordinator)

    async def _visible(self, principal: Principal, assignment_id: str) -> AssignmentDoc:
        doc = await self.store.assignment(assignment_id)
        if doc is None:
            raise rules.not_found("assignment", "assignment-not-found")
        rules.check_assignment_access(principal, doc.reviewer_id)
        return doc

    async def assignment(self, *, principal: Principal, assignment_id: str) -> Assignment:
        """One assignment, if the caller may see it."""
        doc = await self._visible(principal, assignment_id)
        return self._view(doc, now(), rules.is_coordinator(principal))

    async def accept(self, *, principal: Principal, assignment_id: str) -> Assignment:
        """The assigned reviewer accepts; accepting twice is a no-op."""
        async with self.locks.hold(assignment_id):
            doc = await self._visible(principal, assignment_id)
            if rules.may_accept(doc.status):
                at = now()
                accepted = ReviewAccepted(
                    case_id=doc.case_id,
                    assignment_id=assignment_id,
                    reviewer_id=doc.reviewer_id,
                    accepted_at=at,
                )
                await self.emitter.emit(
                    "review.accept",
                    accepted,
                    trace=doc.traceparent,
                    aggregate=assignment_id,
                    write=lambda events: self.store.accept(assignment_id, at=at, events=events),
                )
                log.info("assignment accepted", assignment_id=assignment_id)
        return await self.assignment(principal=principal, assignment_id=assignment_id)

    async def decline(
        self, *, principal: Principal, assignment_id: str, body: DeclineBody
    ) -> Assignment:
        """The assigned reviewer declines; the case goes to the next best reviewer, or waits."""
        async with self.locks.hold(MATCHING_LOCK):
            case_id = (await self._visible(principal, assignment_id)).case_id
            async with self.locks.hold(case_lock(case_id)):
                async with self.locks.hold(assignment_id):
                    doc = await self._visible(principal, assignment_id)
                    if rules.may_decline(doc.status):
                        await self._write_decline(doc, body)
                case = await self.store.case(case_id)
                if case is not None and case.status == CaseStatus.MATCHING:
                    await self._match(case)
        return await self.assignment(principal=principal, assignment_id=assignment_id)

    async def _write_decline(self, doc: AssignmentDoc, body: DeclineBody) -> None:
        # The case is marked for matching first: if we stop before the decline is written, the
        # restart finds the round still assigned and puts the case back as it was.
        case = await self.store.case(doc.case_id)
        if case is not None and case.status == CaseStatus.ASSIGNED and case.assignment_id == doc.id:
            await self.store.set_case_matching(doc.case_id)
        at = now()
        declined = ReviewDeclined(
            case_id=doc.case_id,
            assignment_id=doc.id,
            reviewer_id=doc.reviewer_id,
            declined_at=at,
            reason_code=body.reason_code.value,
        )
        decline = Decline(reason_code=body.reason_code, reason=body.reason)
        await self.emitter.emit(
            "review.decline",
            declined,
            trace=doc.traceparent,
            aggregate=doc.id,
            write=lambda events: self.store.decline(doc.id, at=at, decline=decline, events=events),
        )
        await self._release(doc.reviewer_id, doc.id)
        log.info("assignment declined", assignment_id=doc.id, reason_code=body.reason_code)

    # --- opinion -----------------------------------------------------------------------------

    async def post_opinion(
        self, *, principal: Principal, assignment_id: str, opinion: Opinion
    ) -> tuple[OpinionVersion, bool]:
        """The accepted reviewer's opinion (version 1); the same one again is a replay."""
        async with self.locks.hold(assignment_id):
            doc = await self._visible(principal, assignment_id)
            if not rules.may_write_first_opinion(doc.status):
                first = doc.opinions[0]
                rules.check_replay(first.digest, opinion)
                return opinion_view(doc, first), False
            entry = await self._write_opinion(doc, opinion, 1)
        await self.drain_queue()  # the reviewer has one case less
        return opinion_view(doc, entry), True

    async def correct_opinion(
        self, *, principal: Principal, assignment_id: str, opinion: Opinion
    ) -> OpinionVersion:
        """A correction: a new version, unless it repeats the latest one."""
        async with self.locks.hold(assignment_id):
            doc = await self._visible(principal, assignment_id)
            rules.check_correctable(doc.status)
            latest = doc.opinions[-1]
            if latest.digest == rules.opinion_digest(opinion):
                return opinion_view(doc, latest)
            entry = await self._write_opinion(doc, opinion, latest.version + 1)
        return opinion_view(doc, entry)

    async def opinion(
        self, *, principal: Principal, assignment_id: str, version: int | None = None
    ) -> OpinionVersion:
        """The latest (or a given) version of an assignment's opinion."""
        doc = await self._visible(principal, assignment_id)
        chosen = [v for v in doc.opinions if version is None or v.version == version]
        if not chosen:
            what = "opinion" if version is None else "opinion version"
            raise rules.not_found(what, "no-opinion")
        return opinion_view(doc, chosen[-1])

    async def _write_opinion(
        self, doc: AssignmentDoc, opinion: Opinion, version: int
    ) -> OpinionEntry:
        """Store an opinion version and its sealed `completed` event in one write."""
        reviewer = await self.store.reviewer(doc.reviewer_id)
        display_name = reviewer.display_name if reviewer else doc.reviewer_id
        at = now()
        sealed = rules.sealed_content(opinion, version, display_name, doc.specialty)

        def completed(event_id: str) -> ReviewCompleted:
            return ReviewCompleted(
                case_id=doc.case_id,
                assignment_id=doc.id,
                reviewer_id=doc.reviewer_id,
                specialty=doc.specialty,
                version=version,
                completed_at=at,
                opinion=self.keyring.seal_json(sealed, aad=event_id),
            )

        event = self.emitter.event("review.opinion", completed, trace=doc.traceparent)
        entry = OpinionEntry(
            version=version,
            digest=rules.opinion_digest(opinion),
            completed_at=at,
            event_id=event.id,
            opinion=opinion.model_dump(mode="json"),
        )
        await self.emitter.write(
            lambda events: self.store.add_opinion(doc.id, entry=entry, events=events),
            [event],
            aggregate=doc.id,
        )
        if version == 1:
            await self._release(doc.reviewer_id, doc.id)
        log.info("opinion recorded", assignment_id=doc.id, version=version)
        return entry

    # --- SLA ---------------------------------------------------------------------------------

    async def refresh_overdue(self) -> int:
        """Recount overdue assignments into the gauge; returns the count."""
        count = await self.count_overdue(now())
        OVERDUE_ASSIGNMENTS.labels(self.service).set(count)
        return count

    async def count_overdue(self, at: datetime) -> int:
        """Open assignments past due: each reviewer's open ones, read by `_id`, so the cost is
        the directory and the open work, not every assignment ever made. An ended one still
        listed (a stop between its end and its release) is released on the way."""
        count = 0
        for reviewer in await self.store.all_reviewers():
            for doc in await self.store.open_assignments(reviewer):
                if doc.status not in ACTIVE:
                    await self._release(reviewer.id, doc.id)
                elif rules.is_overdue(doc.status, doc.due_at, at):
                    count += 1
        return count

    async def watch_overdue(self, interval: float) -> None:
        """Keep the overdue gauge fresh until cancelled."""
        while True:
            try:
                await self.refresh_overdue()
            except STORE_ERRORS as exc:
                log.warning("overdue count failed", error=type(exc).__name__)
            await asyncio.sleep(interval)
