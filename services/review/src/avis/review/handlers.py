"""Kafka subscribers of the review service (thin, like api.py)."""

from typing import Any

from avis.review.service import ReviewService
from avis.shared.envelope import Event
from avis.shared.events import CaseSubmitted, CaseWithdrawn
from avis.shared.runtime import Runtime
from avis.shared.topics import CASE_SUBMITTED


def register(runtime: Runtime, review: ReviewService) -> None:
    """Subscribe the review service's handlers."""

    async def on_case(event: Event, payload: Any) -> None:
        # The case's trace context rides on its submission; later work joins that trace.
        if isinstance(payload, CaseSubmitted):
            await review.case_submitted(payload, event.traceparent)
        elif isinstance(payload, CaseWithdrawn):
            await review.case_withdrawn(payload)

    runtime.subscribe(CASE_SUBMITTED, on_case)
