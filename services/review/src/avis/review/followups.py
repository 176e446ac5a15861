"""Follow-up questions after the report.

Once a case's report is issued (reports' `avis.report.ready.v1`, its first version), the patient
or the partner that filed the case may ask up to `rules.MAX_FOLLOW_UPS` questions within a set
period. Each goes to the specialist who wrote the opinion, with a due date of its own, and sends
the case back to review (`avis.review.follow-up-asked.v1`, with the next sequence number); the
specialist's answer (`avis.review.follow-up-answered.v1`) becomes a new report version with an
addendum. The question and the answer are sealed under the case's key, at rest and on the topic;
every read and write of them by a person is in the case's access trail. Every write runs inside
the matcher's section, as every write of an assignment's state does, which numbers the events
one after the other.
"""

from __future__ import annotations

import structlog

from avis.review import contacts, rules
from avis.review.models import FollowUp, FollowUpBody, FollowUpPage, FollowUpState
from avis.review.service import ReviewService
from avis.review.store import AssignmentDoc, CaseDoc, FollowUpEntry
from avis.shared.clock import now
from avis.shared.events import (
    FollowUpAnswer,
    FollowUpAnswered,
    FollowUpAsked,
    FollowUpQuestion,
    ReportReady,
)
from avis.shared.problems import Problem, not_found
from avis.shared.sealing import Sealed
from avis.shared.security import Principal

log = structlog.get_logger("avis.review.followups")


class FollowUps:
    """Follow-up questions: asked by the patient (or the filing partner) after the report,
    answered by the specialist of the completed round."""

    def __init__(self, review: ReviewService, *, period_days: float, due_days: float) -> None:
        self.review = review
        self.period_days = period_days
        self.due_days = due_days

    async def report_ready(self, *, ready: ReportReady) -> None:
        """The case's report was issued: the follow-up period runs from its first version."""
        if ready.version == 1:
            await self.review.store.follow_ups.set_reported(ready.case_id, ready.ready_at)

    async def _case(self, principal: Principal, case_id: str) -> CaseDoc:
        """The case, if the caller may ask about it (404 otherwise, as for an unknown case)."""
        case = await self.review.store.case(case_id)
        if case is None or not rules.may_ask_follow_up(
            principal, patient_id=case.patient_id, partner_id=case.partner_id
        ):
            raise not_found("case", "case-not-found")
        return case

    async def ask(self, *, principal: Principal, case_id: str, body: FollowUpBody) -> FollowUp:
        """Ask a follow-up question about the issued report (409 with the rule's reason: no
        report yet, the questions all asked, or the period over)."""
        review = self.review
        case = await self._case(principal, case_id)
        if case.assignment_id is None:
            raise rules.state_conflict(
                "The case has no review to follow up.", "follow-up-no-report"
            )
        assignment_id = case.assignment_id
        async with review.matcher.deciding(), review.locks.hold(review.emitter.lock(assignment_id)):
            doc = await review._found(assignment_id)
            at = now()
            rules.check_may_ask_follow_up(
                reported_at=case.reported_at,
                asked=len(doc.follow_ups),
                at=at,
                period_days=self.period_days,
            )
            number = len(doc.follow_ups) + 1
            follow_up_id = rules.follow_up_id_for(doc.id, number)
            due = rules.follow_up_due(at, self.due_days)
            seq = rules.next_seq([doc.seq])
            question = FollowUpQuestion(text=body.text)
            ring = await review.seals.ring(doc.case_id)
            specialist = await contacts.recipient(review.store, review.keyring, doc.reviewer_id)

            def asked(event_id: str) -> FollowUpAsked:
                return FollowUpAsked(
                    case_id=doc.case_id,
                    assignment_id=doc.id,
                    reviewer_id=doc.reviewer_id,
                    follow_up_id=follow_up_id,
                    number=number,
                    asked_at=at,
                    due_at=due,
                    question=ring.seal_json(question, aad=event_id),
                    recipient=contacts.for_event(ring, specialist, event_id),
                    seq=seq,
                )

            event = review.emitter.event("review.follow-up.ask", asked, trace=doc.traceparent)
            entry = FollowUpEntry(
                id=follow_up_id,
                number=number,
                asked_at=at,
                due_at=due,
                question=ring.seal(
                    body.text.encode(), rules.follow_up_aad(follow_up_id, "question")
                ),
            )
            await review.matcher.fence()
            await review.emitter.write(
                lambda events: review.store.follow_ups.ask(
                    doc.id, entry=entry, seq=seq, events=events
                ),
                [event],
                aggregate=doc.id,
            )
            log.info("follow-up asked", assignment_id=doc.id, follow_up_id=follow_up_id)
        await review.access.record(principal, doc.case_id, "follow-up.create")
        return entry.view(doc, at=at)

    async def answer(
        self, *, principal: Principal, follow_up_id: str, body: FollowUpBody
    ) -> FollowUp:
        """The specialist of the round answers (409 if answered already): the question and the
        answer travel sealed to reports, which issues the addendum."""
        review = self.review
        assignment_id = rules.assignment_of_follow_up(follow_up_id)
        async with review.matcher.deciding(), review.locks.hold(review.emitter.lock(assignment_id)):
            doc, entry = await self._visible(principal, follow_up_id, answering=True)
            rules.check_may_answer_follow_up(answered=entry.answered_at is not None)
            at = now()
            seq = rules.next_seq([doc.seq])
            ring = await review.seals.ring(doc.case_id)
            question = await self._open(entry.question, follow_up_id, "question")
            reviewer = await review.store.reviewer(doc.reviewer_id)
            sealed = FollowUpAnswer(
                question=question,
                answer=body.text,
                reviewer_display_name=reviewer.display_name if reviewer else doc.reviewer_id,
            )

            def answered(event_id: str) -> FollowUpAnswered:
                return FollowUpAnswered(
                    case_id=doc.case_id,
                    assignment_id=doc.id,
                    reviewer_id=doc.reviewer_id,
                    follow_up_id=follow_up_id,
                    number=entry.number,
                    answered_at=at,
                    answer=ring.seal_json(sealed, aad=event_id),
                    seq=seq,
                )

            event = review.emitter.event("review.follow-up.answer", answered, trace=doc.traceparent)
            done = entry.model_copy(
                update={
                    "answered_at": at,
                    "answer": ring.seal(
                        body.text.encode(), rules.follow_up_aad(follow_up_id, "answer")
                    ),
                }
            )
            follow_ups = [done if f.id == follow_up_id else f for f in doc.follow_ups]
            await review.matcher.fence()
            await review.emitter.write(
                lambda events: review.store.follow_ups.answer(
                    doc.id, follow_ups=follow_ups, answered=follow_up_id, seq=seq, events=events
                ),
                [event],
                aggregate=doc.id,
            )
            log.info("follow-up answered", assignment_id=doc.id, follow_up_id=follow_up_id)
        await review.access.record(principal, doc.case_id, "follow-up.answer")
        return done.view(doc, at=at, question=question, answer=body.text)

    async def read(self, *, principal: Principal, follow_up_id: str) -> FollowUp:
        """One follow-up with its question and answer, opened: for the specialist of the round
        and the case's patient or filing partner (a read in the case's trail)."""
        doc, entry = await self._visible(principal, follow_up_id, answering=False)
        question = await self._open(entry.question, follow_up_id, "question")
        answer = (
            await self._open(entry.answer, follow_up_id, "answer")
            if entry.answer is not None
            else None
        )
        await self.review.access.record(principal, doc.case_id, "follow-up.read")
        return entry.view(doc, at=now(), question=question, answer=answer)

    async def listed(
        self,
        *,
        principal: Principal,
        state: FollowUpState | None,
        cursor: str | None,
        limit: int,
    ) -> FollowUpPage:
        """The open follow-up questions, soonest due first: a specialist's own (their queue of
        follow-ups), all for coordinators; without their texts."""
        reviewer_id = None if rules.is_coordinator(principal) else principal.sub
        ids = await self.review.store.follow_ups.open_ids()
        rounds = {rules.assignment_of_follow_up(i) for i in ids}
        docs = [d for d in await self.review.store.listed(sorted(rounds)) if d is not None]
        at = now()
        found = sorted(
            (
                (rules.sort_key(f.due_at, f.id), f.view(d, at=at))
                for d in docs
                if reviewer_id is None or d.reviewer_id == reviewer_id
                for f in d.follow_ups
                if f.id in ids and (state is None or f.state is state)
            ),
            key=lambda pair: pair[0],
        )
        after = [pair for pair in found if cursor is None or pair[0] > cursor]
        return FollowUpPage.of(
            after[: limit + 1], limit, key=lambda pair: pair[0], view=lambda pair: pair[1]
        )

    async def _visible(
        self, principal: Principal, follow_up_id: str, *, answering: bool
    ) -> tuple[AssignmentDoc, FollowUpEntry]:
        """The round and the follow-up, if the caller may read it (answering: the round's
        specialist only); 404 as for an unknown one otherwise."""
        doc = await self.review.store.assignment(rules.assignment_of_follow_up(follow_up_id))
        entry = next((f for f in doc.follow_ups if f.id == follow_up_id), None) if doc else None
        if doc is None or entry is None:
            raise not_found("follow-up", "follow-up-not-found")
        if principal.role == "reviewer" and principal.sub == doc.reviewer_id:
            return doc, entry
        if not answering:
            case = await self.review.store.case(doc.case_id)
            if case is not None and rules.may_ask_follow_up(
                principal, patient_id=case.patient_id, partner_id=case.partner_id
            ):
                return doc, entry
        if principal.role == "reviewer":
            raise Problem(
                403, "not-your-assignment", "Forbidden", "This follow-up is another reviewer's."
            )
        raise not_found("follow-up", "follow-up-not-found")

    async def _open(self, sealed: Sealed, follow_up_id: str, part: str) -> str:
        """A sealed question or answer of a follow-up, opened (a 410 once the case is erased)."""
        ring = await self.review.keys.opening(sealed)
        return ring.open(sealed, rules.follow_up_aad(follow_up_id, part)).decode()
