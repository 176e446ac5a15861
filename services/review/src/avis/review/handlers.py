"""Kafka subscribers of the review service (thin, like api.py)."""

from avis.review.service import ReviewService
from avis.shared.envelope import Event
from avis.shared.events import CaseSubmitted, CaseWithdrawn
from avis.shared.runtime import Runtime


def register(runtime: Runtime, review: ReviewService) -> None:
    """Register the review service's handlers by payload type."""

    async def on_submitted(event: Event, payload: CaseSubmitted) -> None:
        # The case's trace context rides on its submission; later work joins that trace.
        await review.case_submitted(case=payload, traceparent=event.traceparent)

    async def on_withdrawn(event: Event, payload: CaseWithdrawn) -> None:
        await review.case_withdrawn(withdrawal=payload)

    runtime.on(CaseSubmitted, on_submitted)
    runtime.on(CaseWithdrawn, on_withdrawn)
