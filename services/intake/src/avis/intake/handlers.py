"""Kafka subscribers of the intake service (thin, like api.py): each event becomes a `Change`
of a case's status and timeline, which the service decides on."""

from typing import Any

import structlog

from avis.intake.models import TimelineKind
from avis.intake.service import Change, IntakeService
from avis.shared import topics
from avis.shared.envelope import Event
from avis.shared.events import (
    ReportReady,
    ReviewAccepted,
    ReviewAssigned,
    ReviewCompleted,
    ReviewDeclined,
)
from avis.shared.runtime import Runtime

log = structlog.get_logger("avis.intake.handlers")


def change_of(event: Event, payload: Any) -> Change | None:
    """The change an event reports, or None for an event intake has no use for."""
    match payload:
        case ReviewAssigned():
            return Change(
                TimelineKind.ASSIGNED,
                event.id,
                payload.assigned_at,
                payload.assignment_id,
                payload.reviewer_id,
            )
        case ReviewAccepted():
            return Change(
                TimelineKind.ACCEPTED,
                event.id,
                payload.accepted_at,
                payload.assignment_id,
                payload.reviewer_id,
            )
        case ReviewDeclined():
            return Change(
                TimelineKind.DECLINED,
                event.id,
                payload.declined_at,
                payload.assignment_id,
                payload.reviewer_id,
            )
        case ReviewCompleted():
            return Change(
                TimelineKind.REVIEW_COMPLETED,
                event.id,
                payload.completed_at,
                payload.assignment_id,
                payload.reviewer_id,
            )
        case ReportReady():
            return Change(TimelineKind.REPORT_READY, event.id, payload.ready_at)
    return None


def register(runtime: Runtime, service: IntakeService) -> None:
    """Subscribe the intake service's handlers."""

    async def handle(event: Event, payload: Any) -> None:
        change = change_of(event, payload)
        if change is None:
            log.info("event type not used by intake", type=event.type)
            return
        await service.apply(payload.case_id, change)

    for topic in (topics.REVIEW_ASSIGNED, topics.REVIEW_COMPLETED, topics.REPORT_READY):
        runtime.subscribe(topic, handle)
