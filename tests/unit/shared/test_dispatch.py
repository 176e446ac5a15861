"""Handlers registered by payload type: one subscriber per topic, dispatching by `ce_type`."""

from datetime import UTC, datetime

import pytest

from avis.shared.envelope import Event
from avis.shared.events import (
    CaseWithdrawn,
    ReviewAccepted,
    ReviewAssigned,
    ReviewDeclined,
    asyncapi,
)
from avis.shared.runtime import Runtime
from avis.shared.settings import CommonSettings
from avis.shared.topics import REVIEW_ASSIGNED

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def runtime() -> Runtime:
    settings = CommonSettings(
        service_name="dispatch-test",
        sealing_keys="k1:" + "A" * 43 + "=",
        jwt_secret="x" * 40,
        log_format="json",
    )
    return Runtime(settings)


async def test_each_type_reaches_its_handler_and_an_unregistered_type_is_skipped() -> None:
    rt = runtime()
    seen: list[tuple[str, str]] = []

    async def on_assigned(event: Event, p: ReviewAssigned) -> None:
        seen.append(("assigned", p.assignment_id))

    async def on_declined(event: Event, p: ReviewDeclined) -> None:
        seen.append(("declined", p.reason_code))

    rt.on(ReviewAssigned, on_assigned)
    rt.on(ReviewDeclined, on_declined)
    assert rt.receives == (REVIEW_ASSIGNED,)  # one subscriber for the topic, not one per type

    for payload in (
        ReviewAssigned(
            case_id="c1",
            assignment_id="a1",
            reviewer_id="r1",
            specialty="cardiology",
            assigned_at=NOW,
            due_at=NOW,
        ),
        ReviewAccepted(case_id="c1", assignment_id="a1", reviewer_id="r1", accepted_at=NOW),
        ReviewDeclined(
            case_id="c1", assignment_id="a1", reviewer_id="r1", declined_at=NOW, reason_code="x"
        ),
    ):
        event = Event.new(payload, "/avis/test")
        await rt._dispatch(event, event.payload())
    assert seen == [("assigned", "a1"), ("declined", "x")]


def test_a_type_has_one_handler() -> None:
    rt = runtime()

    async def handler(event: Event, p: CaseWithdrawn) -> None:
        return None

    rt.on(CaseWithdrawn, handler)
    with pytest.raises(ValueError, match="already has a handler"):
        rt.on(CaseWithdrawn, handler)


def _operations(rt: Runtime) -> dict[str, list[str]]:
    doc = asyncapi("test", rt.sends, rt.received())
    return {
        name: [ref["$ref"].rsplit("/", 1)[1] for ref in op["messages"]]
        for name, op in doc["operations"].items()
    }


def test_the_asyncapi_document_follows_the_registrations_type_by_type() -> None:
    settings = CommonSettings(
        service_name="doc-test",
        sealing_keys="k1:" + "A" * 43 + "=",
        jwt_secret="x" * 40,
        log_format="json",
    )
    rt = Runtime(settings, sends=(CaseWithdrawn,))

    async def on_assigned(event: Event, p: ReviewAssigned) -> None:
        return None

    rt.on(ReviewAssigned, on_assigned)
    # Received: only the type registered, though its topic carries three; sent: as declared.
    assert _operations(rt) == {
        "receive-review-assigned": ["ReviewAssigned"],
        "send-case-submitted": ["CaseWithdrawn"],
    }

    async def on_accepted(event: Event, p: ReviewAccepted) -> None:
        return None

    rt.on(ReviewAccepted, on_accepted)
    assert _operations(rt)["receive-review-assigned"] == ["ReviewAssigned", "ReviewAccepted"]


def test_a_topic_consumed_whole_documents_every_type_on_it() -> None:
    rt = runtime()

    async def handle(event: Event, payload: object) -> None:
        return None

    rt.subscribe(REVIEW_ASSIGNED, handle)
    assert _operations(rt) == {
        "receive-review-assigned": [
            "ReviewAssigned",
            "ReviewAccepted",
            "ReviewDeclined",
            "InformationRequested",
            "ReviewResumed",
            "SecondReadingRequested",
            "SecondReadingCommented",
            "SecondReadingAgreed",
            "FollowUpAsked",
            "TranslationQueued",
            "TranslationDone",
        ]
    }
