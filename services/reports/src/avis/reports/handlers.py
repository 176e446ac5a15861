"""Kafka subscribers of the reports service (thin, like api.py).

A submission and an opinion are each recorded with their effect (the case's record, its
opinion versions and the report versions composed of them), and the service's own state turns
a redelivery away: a known case is not recorded again, an opinion version kept is not kept
twice, a version composed is not composed again. So the inbox is not looked up before them
(`Runtime.on(..., recorded=True)`); every other type keeps the inbox's look-up.
"""

from avis.reports.addenda import Addenda
from avis.reports.keying import CaseKeying
from avis.reports.service import CaseErasure, ReportsService
from avis.shared.envelope import Event
from avis.shared.events import (
    CaseClaimed,
    CaseErased,
    CaseKeyed,
    CaseSubmitted,
    CaseWithdrawn,
    FollowUpAnswered,
    ReviewCompleted,
)
from avis.shared.runtime import Runtime


def register(
    runtime: Runtime, reports: ReportsService, erasure: CaseErasure, keying: CaseKeying
) -> None:
    """Register the reports service's handlers by payload type."""

    async def on_submitted(event: Event, payload: CaseSubmitted) -> None:
        # The contact is sealed under the event id; the case's trace rides on its submission.
        await reports.case_submitted(event_id=event.id, case=payload, traceparent=event.traceparent)

    async def on_completed(event: Event, payload: ReviewCompleted) -> None:
        await reports.review_completed(event=event, review=payload)

    async def on_claimed(event: Event, payload: CaseClaimed) -> None:
        await reports.case_claimed(claim=payload)

    async def on_withdrawn(event: Event, payload: CaseWithdrawn) -> None:
        await reports.case_withdrawn(withdrawal=payload)

    async def on_erased(event: Event, payload: CaseErased) -> None:
        await erasure.case_erased(erasure=payload)

    async def on_keyed(event: Event, payload: CaseKeyed) -> None:
        # A case filed before per-case keys given its key (intake's migration).
        await keying.case_keyed(keyed=payload)

    runtime.on(CaseSubmitted, on_submitted, recorded=True)
    runtime.on(ReviewCompleted, on_completed, recorded=True)
    runtime.on(CaseClaimed, on_claimed)
    runtime.on(CaseWithdrawn, on_withdrawn)
    runtime.on(CaseErased, on_erased)
    runtime.on(CaseKeyed, on_keyed)


def register_addenda(runtime: Runtime, addenda: Addenda) -> None:
    """Register the handler of the answers to follow-up questions (each a report version)."""

    async def on_answered(event: Event, payload: FollowUpAnswered) -> None:
        await addenda.follow_up_answered(event=event, answered=payload)

    runtime.on(FollowUpAnswered, on_answered)
