"""Kafka subscribers of the intake service (thin, like api.py): each event becomes a `Change`
of a case's status and timeline, which the service decides on."""

from avis.intake.models import TimelineKind
from avis.intake.rules import Change
from avis.intake.service import Reported
from avis.shared.envelope import Event
from avis.shared.events import (
    FollowUpAnswered,
    FollowUpAsked,
    InformationRequested,
    ReportReady,
    ReviewAccepted,
    ReviewAssigned,
    ReviewCompleted,
    ReviewDeclined,
    ReviewResumed,
    SecondReadingAgreed,
    SecondReadingRequested,
    TranslationDone,
    TranslationQueued,
)
from avis.shared.runtime import Runtime


def register(runtime: Runtime, reported: Reported) -> None:
    """Register the intake service's handlers by payload type."""

    async def on_assigned(event: Event, p: ReviewAssigned) -> None:
        change = Change(
            TimelineKind.ASSIGNED, event.id, p.assigned_at, p.assignment_id, p.reviewer_id, p.seq
        )
        await reported.follow(case_id=p.case_id, change=change)

    async def on_accepted(event: Event, p: ReviewAccepted) -> None:
        change = Change(
            TimelineKind.ACCEPTED, event.id, p.accepted_at, p.assignment_id, p.reviewer_id, p.seq
        )
        await reported.follow(case_id=p.case_id, change=change)

    async def on_declined(event: Event, p: ReviewDeclined) -> None:
        change = Change(
            TimelineKind.DECLINED, event.id, p.declined_at, p.assignment_id, p.reviewer_id, p.seq
        )
        await reported.follow(case_id=p.case_id, change=change)

    async def on_completed(event: Event, p: ReviewCompleted) -> None:
        change = Change(
            TimelineKind.REVIEW_COMPLETED,
            event.id,
            p.completed_at,
            p.assignment_id,
            p.reviewer_id,
            p.seq,
        )
        await reported.follow(case_id=p.case_id, change=change)

    async def on_information_requested(event: Event, p: InformationRequested) -> None:
        change = Change(
            TimelineKind.INFORMATION_REQUESTED,
            event.id,
            p.requested_at,
            p.assignment_id,
            p.reviewer_id,
            p.seq,
        )
        await reported.information_requested(event_id=event.id, change=change, requested=p)

    async def on_resumed(event: Event, p: ReviewResumed) -> None:
        change = Change(
            TimelineKind.REVIEW_RESUMED,
            event.id,
            p.resumed_at,
            p.assignment_id,
            p.reviewer_id,
            p.seq,
        )
        await reported.review_resumed(change=change, resumed=p)

    async def on_report(event: Event, p: ReportReady) -> None:
        change = Change(TimelineKind.REPORT_READY, event.id, p.ready_at, seq=p.seq)
        await reported.follow(case_id=p.case_id, change=change)

    runtime.on(ReviewAssigned, on_assigned)
    runtime.on(ReviewAccepted, on_accepted)
    runtime.on(ReviewDeclined, on_declined)
    runtime.on(ReviewCompleted, on_completed)
    runtime.on(InformationRequested, on_information_requested)
    runtime.on(ReviewResumed, on_resumed)
    _second_reading(runtime, reported)
    runtime.on(ReportReady, on_report)


def _second_reading(runtime: Runtime, reported: Reported) -> None:
    """A second specialist reads the opinion, then agrees: timeline entries, the status stays."""

    async def on_second_reading(event: Event, p: SecondReadingRequested) -> None:
        change = Change(
            TimelineKind.SECOND_READING,
            event.id,
            p.requested_at,
            p.assignment_id,
            p.reviewer_id,
            p.seq,
        )
        await reported.follow(case_id=p.case_id, change=change)

    async def on_second_agreed(event: Event, p: SecondReadingAgreed) -> None:
        change = Change(
            TimelineKind.SECOND_READING_AGREED,
            event.id,
            p.agreed_at,
            p.assignment_id,
            p.reviewer_id,
            p.seq,
        )
        await reported.follow(case_id=p.case_id, change=change)

    runtime.on(SecondReadingRequested, on_second_reading)
    runtime.on(SecondReadingAgreed, on_second_agreed)
    _translation(runtime, reported)


def _translation(runtime: Runtime, reported: Reported) -> None:
    """International review: each translation queued and done is a timeline entry, both ways;
    the status stays."""

    async def on_queued(event: Event, p: TranslationQueued) -> None:
        change = Change(
            TimelineKind.TRANSLATION_QUEUED,
            event.id,
            p.queued_at,
            p.assignment_id,
            p.reviewer_id,
            p.seq,
        )
        await reported.follow(case_id=p.case_id, change=change)

    async def on_done(event: Event, p: TranslationDone) -> None:
        change = Change(
            TimelineKind.TRANSLATION_DONE,
            event.id,
            p.done_at,
            p.assignment_id,
            p.reviewer_id,
            p.seq,
        )
        await reported.follow(case_id=p.case_id, change=change)

    runtime.on(TranslationQueued, on_queued)
    runtime.on(TranslationDone, on_done)


def register_follow_ups(runtime: Runtime, reported: Reported) -> None:
    """Register the follow-up questions' handlers: the case goes back to review, and each is
    a timeline entry (the answer's report version sets the status again)."""

    async def on_follow_up_asked(event: Event, p: FollowUpAsked) -> None:
        change = Change(
            TimelineKind.FOLLOW_UP_ASKED,
            event.id,
            p.asked_at,
            p.assignment_id,
            p.reviewer_id,
            p.seq,
        )
        await reported.follow(case_id=p.case_id, change=change)

    async def on_follow_up_answered(event: Event, p: FollowUpAnswered) -> None:
        change = Change(
            TimelineKind.FOLLOW_UP_ANSWERED,
            event.id,
            p.answered_at,
            p.assignment_id,
            p.reviewer_id,
            p.seq,
        )
        await reported.follow(case_id=p.case_id, change=change)

    runtime.on(FollowUpAsked, on_follow_up_asked)
    runtime.on(FollowUpAnswered, on_follow_up_answered)
