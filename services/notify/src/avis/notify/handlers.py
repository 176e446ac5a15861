"""Kafka subscribers of the notify service (thin, like api.py): every event it reads goes to
one use case, which parks it or queues its email and webhook deliveries; nothing is sent from
here."""

from avis.notify.keying import CaseKeying
from avis.notify.professionals import ProfessionalEmails
from avis.notify.service import CaseErasure, NotifyService
from avis.shared.envelope import Event
from avis.shared.events import (
    CaseClaimed,
    CaseErased,
    CaseKeyed,
    CaseSubmitted,
    CaseWithdrawn,
    FollowUpAnswered,
    FollowUpAsked,
    InformationRequested,
    Payload,
    PhysicianCopySent,
    ReportReady,
    ReviewAssigned,
    ReviewResumed,
    SecondReadingCommented,
    SecondReadingRequested,
    TranslationDone,
    TranslationQueued,
)
from avis.shared.runtime import Runtime


def register(
    runtime: Runtime,
    notify: NotifyService,
    erasure: CaseErasure,
    keying: CaseKeying,
    professionals: ProfessionalEmails,
) -> None:
    """Register the notify service's handlers by payload type."""

    async def on_submitted(event: Event, payload: CaseSubmitted) -> None:
        await notify.case_submitted(event=event, payload=payload)

    async def on_event(event: Event, payload: Payload) -> None:
        await notify.apply(event=event, payload=payload)

    async def on_work(event: Event, payload: Payload) -> None:
        # The patient's side first (parked with its case), then the professional's email.
        await notify.apply(event=event, payload=payload)
        await professionals.work_waits(event=event, payload=payload)

    async def on_erased(event: Event, payload: CaseErased) -> None:
        await erasure.case_erased(event=event, erasure=payload)

    async def on_keyed(event: Event, payload: CaseKeyed) -> None:
        # A case filed before per-case keys given its key (intake's migration).
        await keying.case_keyed(keyed=payload)

    runtime.on(CaseSubmitted, on_submitted)
    runtime.on(CaseWithdrawn, on_event)
    runtime.on(CaseClaimed, on_event)
    runtime.on(ReviewAssigned, on_event)
    runtime.on(InformationRequested, on_event)
    runtime.on(ReviewResumed, on_event)
    runtime.on(SecondReadingRequested, on_work)
    runtime.on(SecondReadingCommented, on_work)
    runtime.on(FollowUpAsked, on_work)
    runtime.on(TranslationQueued, on_work)
    runtime.on(TranslationDone, on_event)
    runtime.on(FollowUpAnswered, on_event)
    runtime.on(ReportReady, on_event)
    runtime.on(PhysicianCopySent, on_event)  # notify's own: a webhook for the filing partner
    runtime.on(CaseErased, on_erased)
    runtime.on(CaseKeyed, on_keyed)
