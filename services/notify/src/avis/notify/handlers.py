"""Kafka subscribers of the notify service (thin, like api.py): every event it reads goes to
one use case, which parks it or queues its email and webhook deliveries; nothing is sent from
here."""

import functools

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

    # The case keeps the ids of the events applied to it, in the write that ends their effect,
    # and turns a redelivery away (`NotifyService`): no inbox look-up before these handlers,
    # and no marker after (`InboxUse.OWN`). The others keep the inbox: a professional's email
    # and an erasure or a key are not recorded on the case that way.
    own = functools.partial(runtime.on, recorded=True, marked=False)
    own(CaseSubmitted, on_submitted)
    own(CaseWithdrawn, on_event)
    own(CaseClaimed, on_event)
    own(ReviewAssigned, on_event)
    own(InformationRequested, on_event)
    own(ReviewResumed, on_event)
    runtime.on(SecondReadingRequested, on_work)
    runtime.on(SecondReadingCommented, on_work)
    runtime.on(FollowUpAsked, on_work)
    runtime.on(TranslationQueued, on_work)
    own(TranslationDone, on_event)
    own(FollowUpAnswered, on_event)
    own(ReportReady, on_event)
    own(PhysicianCopySent, on_event)  # notify's own: a webhook for the filing partner
    runtime.on(CaseErased, on_erased)
    runtime.on(CaseKeyed, on_keyed)
