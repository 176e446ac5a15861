"""Kafka subscribers of the notify service (thin, like api.py): every event it reads goes to
one use case, which parks it or queues its email and webhook deliveries; nothing is sent from
here."""

from avis.notify.service import CaseErasure, NotifyService
from avis.shared.envelope import Event
from avis.shared.events import (
    CaseClaimed,
    CaseErased,
    CaseSubmitted,
    CaseWithdrawn,
    Payload,
    ReportReady,
    ReviewAssigned,
)
from avis.shared.runtime import Runtime


def register(runtime: Runtime, notify: NotifyService, erasure: CaseErasure) -> None:
    """Register the notify service's handlers by payload type."""

    async def on_submitted(event: Event, payload: CaseSubmitted) -> None:
        await notify.case_submitted(event=event, payload=payload)

    async def on_event(event: Event, payload: Payload) -> None:
        await notify.apply(event=event, payload=payload)

    async def on_erased(event: Event, payload: CaseErased) -> None:
        await erasure.case_erased(event=event, erasure=payload)

    runtime.on(CaseSubmitted, on_submitted)
    runtime.on(CaseWithdrawn, on_event)
    runtime.on(CaseClaimed, on_event)
    runtime.on(ReviewAssigned, on_event)
    runtime.on(ReportReady, on_event)
    runtime.on(CaseErased, on_erased)
