"""Kafka subscribers of the review service (thin, like api.py): one use case per payload type.

A submission and a report issued are recorded with their effect, and the stored case turns a
redelivery away (a case inserted once, matched only while it is matching; the follow-up period
set from the first version once), so no inbox look-up precedes them (`recorded`); every other
type keeps the inbox's look-up.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from avis.review.followups import FollowUps
from avis.review.keying import CaseKeying
from avis.review.service import ReviewService
from avis.shared.envelope import Event
from avis.shared.events import (
    CaseClaimed,
    CaseErased,
    CaseKeyed,
    CaseSubmitted,
    CaseWithdrawn,
    InformationProvided,
    Payload,
    ReportReady,
)
from avis.shared.runtime import Runtime

Handler = Callable[[Event, Any], Awaitable[None]]


def register(runtime: Runtime, review: ReviewService, keying: CaseKeying) -> None:
    """Register the review service's handlers by payload type."""
    table: dict[type[Payload], Handler] = {
        # The case's trace context rides on its submission; later work joins that trace.
        CaseSubmitted: lambda event, case: review.case_submitted(
            case=case, traceparent=event.traceparent, event_id=event.id
        ),
        CaseWithdrawn: lambda _, withdrawal: review.case_withdrawn(withdrawal=withdrawal),
        # The patient of a partner-filed case, who may read the case's trail from then on.
        CaseClaimed: lambda _, claim: review.case_claimed(claim=claim),
        # Its key destroyed in the key service: drop this copy of it.
        CaseErased: lambda _, erasure: review.case_erased(erasure=erasure),
        # A case filed before per-case keys given its key (intake's migration).
        CaseKeyed: lambda _, keyed: keying.case_keyed(keyed=keyed),
        # The patient answered a request for more information: the review's clock resumes.
        InformationProvided: lambda _, provided: review.requests.provided(provided=provided),
    }
    for payload_type, handler in table.items():
        runtime.on(payload_type, handler, recorded=payload_type is CaseSubmitted)


def register_follow_ups(runtime: Runtime, follow_ups: FollowUps) -> None:
    """Register the follow-up questions' handler: the report issued opens their period."""
    runtime.on(ReportReady, lambda _, ready: follow_ups.report_ready(ready=ready), recorded=True)
