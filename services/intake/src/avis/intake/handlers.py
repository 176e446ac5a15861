"""Kafka subscribers of the intake service (thin, like api.py): each event becomes a `Change`
of a case's status and timeline, which the service decides on.

Every handler ends in `Reported.follow`, whose write puts the event's id in the case's timeline
and whose rule turns an event already there away (`rules.decide`): the event is recorded with
its effect, so the inbox is not looked up first (`Runtime.on(..., recorded=True)`).
"""

import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol, TypeVar

from avis.intake.models import TimelineKind
from avis.intake.rules import Change
from avis.intake.service import Reported
from avis.shared.envelope import Event
from avis.shared.events import (
    FollowUpAnswered,
    FollowUpAsked,
    InformationRequested,
    PhysicianCopySent,
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


class _RoundFact(Protocol):
    """What every event about an assignment round carries."""

    @property
    def case_id(self) -> str: ...

    @property
    def assignment_id(self) -> str: ...

    @property
    def reviewer_id(self) -> str: ...

    @property
    def seq(self) -> int: ...


F = TypeVar("F", bound=_RoundFact)


def _change(kind: TimelineKind, event: Event, p: _RoundFact, at: datetime) -> Change:
    return Change(kind, event.id, at, p.assignment_id, p.reviewer_id, p.seq)


def _follows(
    reported: Reported, kind: TimelineKind, at: Callable[[F], datetime]
) -> Callable[[Event, F], Awaitable[None]]:
    """The handler of an event that is a timeline entry `kind` of its case at `at(payload)`,
    ordered by its `seq` (the service decides what it does to the status)."""

    async def handle(event: Event, p: F) -> None:
        await reported.follow(case_id=p.case_id, change=_change(kind, event, p, at(p)))

    return handle


def register(runtime: Runtime, reported: Reported) -> None:
    """Register the intake service's handlers by payload type."""

    async def on_information_requested(event: Event, p: InformationRequested) -> None:
        change = _change(TimelineKind.INFORMATION_REQUESTED, event, p, p.requested_at)
        await reported.information_requested(event_id=event.id, change=change, requested=p)

    async def on_resumed(event: Event, p: ReviewResumed) -> None:
        change = _change(TimelineKind.REVIEW_RESUMED, event, p, p.resumed_at)
        await reported.review_resumed(change=change, resumed=p)

    async def on_report(event: Event, p: ReportReady) -> None:
        change = Change(TimelineKind.REPORT_READY, event.id, p.ready_at, seq=p.seq)
        await reported.follow(case_id=p.case_id, change=change)

    async def on_physician_copy(event: Event, p: PhysicianCopySent) -> None:
        # A timeline entry; the status stays (the event carries no `seq`: it changes none).
        change = Change(TimelineKind.PHYSICIAN_COPY_SENT, event.id, p.sent_at)
        await reported.follow(case_id=p.case_id, change=change)

    on = functools.partial(runtime.on, recorded=True)
    on(ReviewAssigned, _follows(reported, TimelineKind.ASSIGNED, lambda p: p.assigned_at))
    on(ReviewAccepted, _follows(reported, TimelineKind.ACCEPTED, lambda p: p.accepted_at))
    on(ReviewDeclined, _follows(reported, TimelineKind.DECLINED, lambda p: p.declined_at))
    on(ReviewCompleted, _follows(reported, TimelineKind.REVIEW_COMPLETED, lambda p: p.completed_at))
    on(InformationRequested, on_information_requested)
    on(ReviewResumed, on_resumed)
    _second_reading(runtime, reported)
    on(ReportReady, on_report)
    on(PhysicianCopySent, on_physician_copy)


def _second_reading(runtime: Runtime, reported: Reported) -> None:
    """A second specialist reads the opinion, then agrees; international review's translations,
    queued and done, both ways: timeline entries, the status stays."""
    on = functools.partial(runtime.on, recorded=True)
    on(
        SecondReadingRequested,
        _follows(reported, TimelineKind.SECOND_READING, lambda p: p.requested_at),
    )
    on(
        SecondReadingAgreed,
        _follows(reported, TimelineKind.SECOND_READING_AGREED, lambda p: p.agreed_at),
    )
    on(
        TranslationQueued,
        _follows(reported, TimelineKind.TRANSLATION_QUEUED, lambda p: p.queued_at),
    )
    on(TranslationDone, _follows(reported, TimelineKind.TRANSLATION_DONE, lambda p: p.done_at))


def register_follow_ups(runtime: Runtime, reported: Reported) -> None:
    """Register the follow-up questions' handlers: the case goes back to review, and each is
    a timeline entry (the answer's report version sets the status again)."""
    on = functools.partial(runtime.on, recorded=True)
    on(FollowUpAsked, _follows(reported, TimelineKind.FOLLOW_UP_ASKED, lambda p: p.asked_at))
    on(
        FollowUpAnswered,
        _follows(reported, TimelineKind.FOLLOW_UP_ANSWERED, lambda p: p.answered_at),
    )
