"""The physician's copy as pure rules: which emails also go to the treating physician, and the
link that opens the report for them (the page of web in their email, reports' own for their
institution's FHIR endpoint), and the schedule a failed post to their institution's
FHIR endpoint is retried on (the webhooks', not the emails')."""

from datetime import UTC, datetime, timedelta

import pytest

from avis.notify.models import Template, WebhookEvent
from avis.notify.rules import (
    EMAIL_JITTER,
    POST_JITTER,
    CaseView,
    fhir_endpoint,
    physician_copy,
    physician_link,
    physician_page,
    reading,
    retry_window_from,
    send_retry_at,
    webhook_payload,
)
from avis.notify.settings import Settings
from avis.shared.events import Language, PhysicianCopySent


@pytest.mark.parametrize("template", [*Template, None])
def test_only_a_report_goes_to_the_physician_and_only_with_one(template: Template | None) -> None:
    report = template in (Template.REPORT_READY, Template.REPORT_UPDATED)
    assert physician_copy(template, has_physician=True) == report
    assert not physician_copy(template, has_physician=False)


def test_the_link_is_on_the_reports_service_that_announced_the_report() -> None:
    link = physician_link(
        "https://reports.avis.example/v1/reports/r-1?version=2", "case/1", "s3cr3t_-x"
    )
    assert link == "https://reports.avis.example/v1/cases/case%2F1/report/physician/s3cr3t_-x"


def test_the_emailed_link_opens_the_physicians_page_in_their_language() -> None:
    link = physician_page("https://avis.example/", "case/1", "s3cr3t_-x", Language.EN)
    assert link == "https://avis.example/physician/case%2F1/s3cr3t_-x?lang=en"


def test_an_institution_with_an_endpoint_takes_the_fhir_document() -> None:
    endpoints = {"290000017": "https://fhir.chu.example/Bundle"}
    assert fhir_endpoint(endpoints, "290000017") == "https://fhir.chu.example/Bundle"
    assert fhir_endpoint(endpoints, "750712184") is None
    assert fhir_endpoint(endpoints, None) is None


def _delays(*, posted: bool, settings: Settings) -> list[float]:
    """The delays of a send failing on every attempt, until it is given up (jitter 1)."""
    first = now = datetime(2026, 3, 1, tzinfo=UTC)
    delays: list[float] = []
    for failures in range(1, 200):
        at = send_retry_at(
            failures,
            posted=posted,
            first_at=first,
            now=now,
            schedule=settings.retry_schedule,
            backoff=settings.webhook_backoff(),
            jitter=1.0,
        )
        if at is None:
            return delays
        delays.append((at - now).total_seconds())
        now = at
    raise AssertionError("never given up")


def test_a_post_to_a_fhir_endpoint_is_retried_on_the_webhooks_schedule() -> None:
    settings = Settings(
        webhook_retry_base_seconds=5,
        webhook_retry_max_delay_seconds=3600,
        webhook_retry_window_seconds=86400,
    )
    posted = _delays(posted=True, settings=settings)
    assert posted[:6] == [5, 10, 20, 40, 80, 160], "the webhooks' backoff from its base"
    assert max(posted) == 3600, "at most the webhooks' longest delay"
    assert sum(posted) <= 86400, "within the webhooks' window of the first attempt"
    assert 25 < len(posted) < 40
    # An email keeps its own schedule.
    assert _delays(posted=False, settings=settings) == list(settings.retry_schedule)
    # The webhooks' settings move the post's schedule, and only the post's.
    quick = Settings(
        webhook_retry_base_seconds=1,
        webhook_retry_max_delay_seconds=4,
        webhook_retry_window_seconds=20,
        retry_schedule=(30.0, 120.0),
    )
    assert _delays(posted=True, settings=quick) == [1, 2, 4, 4, 4, 4]
    assert _delays(posted=False, settings=quick) == [30, 120]


def test_the_window_counts_from_the_first_attempt_and_each_schedule_has_its_jitter() -> None:
    first = datetime(2026, 3, 1, tzinfo=UTC)
    backoff = Settings(webhook_retry_window_seconds=100).webhook_backoff()
    late = first + timedelta(seconds=99)
    kw = {"schedule": (30.0,), "backoff": backoff, "jitter": 1.0}
    assert send_retry_at(1, posted=True, first_at=first, now=late, **kw) is None
    assert send_retry_at(1, posted=True, first_at=late, now=late, **kw) == late + timedelta(
        seconds=5
    )
    assert POST_JITTER == (0.5, 1.0) and EMAIL_JITTER == (0.9, 1.1)


def test_the_physicians_copy_sent_is_a_webhook_for_partners_naming_no_one() -> None:
    told = PhysicianCopySent(
        case_id="c-1", report_version=2, channel="fhir", sent_at=datetime(2026, 3, 2, tzinfo=UTC)
    )
    early = reading(told, CaseView(), UTC)
    assert early.decision.park, "before its case: parked, as every event"
    read = reading(told, CaseView(submitted=True), UTC)
    assert read.decision.send is None and read.decision.hooks, "no email: a webhook"
    body = webhook_payload(
        event_id="evt-1",
        event_type=WebhookEvent.PHYSICIAN_COPY_SENT,
        source="/avis/notify",
        time=told.sent_at,
        case_id="c-1",
        reference="AV-2026-000001",
        partner_reference="P-1",
        link="https://avis.example/cases/c-1",
        extra=read.extra,
        status=read.status,
    )
    data = body["data"]
    assert isinstance(data, dict)
    assert data["status"] == "report_ready"
    assert (data["report_version"], data["channel"]) == (2, "fhir")
    assert data["sent_at"] == "2026-03-02T00:00:00Z"
    assert not {"email", "name", "physician", "institution_code"} & set(data)
    erased = reading(told, CaseView(submitted=True, erased=True), UTC)
    assert not erased.decision.hooks, "an erased case: nothing at all"


def test_a_post_that_waited_for_its_endpoint_gets_a_whole_window_after_the_re_enabling() -> None:
    first = datetime(2026, 3, 1, tzinfo=UTC)
    resumed = first + timedelta(days=9)  # disabled for nine days, longer than the window
    now = resumed + timedelta(minutes=1)
    assert retry_window_from(None, None, now) == now  # its first attempt is this one
    assert retry_window_from(first, None, now) == first
    assert retry_window_from(first, resumed, now) == resumed
    backoff = Settings(webhook_retry_window_seconds=86400).webhook_backoff()
    kept = send_retry_at(
        3,
        posted=True,
        first_at=retry_window_from(first, resumed, now),
        now=now,
        schedule=(),
        backoff=backoff,
        jitter=1.0,
    )
    assert kept is not None, "retried within its new window"
    lost = send_retry_at(
        3, posted=True, first_at=first, now=now, schedule=(), backoff=backoff, jitter=1.0
    )
    assert lost is None, "counted from its first attempt, it would have been given up"
