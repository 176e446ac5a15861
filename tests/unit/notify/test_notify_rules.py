"""The notification matrix and the retry schedule, as pure decisions."""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from avis.notify import rules
from avis.notify.models import Outcome, SendStatus, Template
from avis.notify.rules import CaseView
from avis.notify.settings import DEFAULT_RETRY_SCHEDULE, Settings
from avis.shared.events import (
    CaseSubmitted,
    CaseWithdrawn,
    ReportReady,
    ReviewAssigned,
    Specialty,
)
from avis.shared.security import Principal

D1, D2 = date(2026, 3, 9), date(2026, 3, 12)
SUBMITTED = CaseView(submitted=True)


def test_the_matrix() -> None:
    received = rules.on_submitted(CaseView())
    assert received.send is Template.CASE_RECEIVED and received.then.submitted
    assert rules.on_submitted(SUBMITTED).send is None  # once

    first = rules.on_assigned(SUBMITTED, D1)
    assert first.send is Template.REVIEW_ASSIGNED and first.then.told_due == D1
    assert rules.on_assigned(first.then, D1).send is None  # reassigned, same date: nothing
    moved = rules.on_assigned(first.then, D2)
    assert moved.send is Template.EXPECTED_DATE_CHANGED and moved.then.told_due == D2

    ready = rules.on_report_ready(SUBMITTED, 1)
    assert ready.send is Template.REPORT_READY and ready.then.report_version == 1
    assert rules.on_report_ready(ready.then, 1).send is None  # the same version again
    updated = rules.on_report_ready(ready.then, 2)
    assert updated.send is Template.REPORT_UPDATED
    assert rules.on_report_ready(updated.then, 1).send is None  # a late older version

    withdrawn = rules.on_withdrawn(SUBMITTED)
    assert withdrawn.send is Template.CASE_WITHDRAWN
    assert rules.on_withdrawn(withdrawn.then).send is None
    assert rules.on_assigned(withdrawn.then, D1).send is None
    assert rules.on_report_ready(withdrawn.then, 1).send is None
    assert rules.on_information_requested(withdrawn.then).send is None
    assert rules.on_resumed(withdrawn.then, D2).send is None


def test_a_request_for_information_is_told_and_so_is_the_new_date_after_it() -> None:
    told = rules.on_assigned(SUBMITTED, D1).then
    asked = rules.on_information_requested(told)
    assert asked.send is Template.INFORMATION_REQUESTED and asked.then == told
    resumed = rules.on_resumed(asked.then, D2)
    assert resumed.send is Template.REVIEW_RESUMED and resumed.then.told_due == D2
    read = rules.Reading(resumed)
    assert rules.email_params("AV-2026-000042", read)["due_date"] == D2.isoformat()


@pytest.mark.parametrize(
    "decide",
    [
        lambda v: rules.on_assigned(v, D1),
        lambda v: rules.on_report_ready(v, 1),
        rules.on_withdrawn,
        rules.on_information_requested,
        lambda v: rules.on_resumed(v, D2),
        rules.on_follow_up_asked,
        rules.on_follow_up_answered,
    ],
)
def test_events_before_their_case_are_parked(decide: object) -> None:
    decision = decide(CaseView())  # type: ignore[operator]
    assert decision.park and decision.send is None and decision.then == CaseView()


def test_a_follow_up_question_is_told_when_received_and_when_answered() -> None:
    told = rules.on_report_ready(SUBMITTED, 1).then
    asked = rules.on_follow_up_asked(told)
    assert asked.send is Template.FOLLOW_UP_RECEIVED and asked.then == told
    answered = rules.on_follow_up_answered(asked.then)
    assert answered.send is Template.FOLLOW_UP_ANSWERED and answered.then == told
    withdrawn = rules.on_withdrawn(told).then
    assert rules.on_follow_up_asked(withdrawn).send is None
    assert rules.on_follow_up_answered(withdrawn).send is None


def test_the_retry_schedule_then_failure() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    schedule = (30.0, 120.0, 600.0)
    assert rules.next_attempt(1, schedule, now) == now + timedelta(seconds=30)
    assert rules.next_attempt(3, schedule, now, jitter=1.1) == now + timedelta(seconds=660)
    assert rules.next_attempt(4, schedule, now) is None
    assert sum(DEFAULT_RETRY_SCHEDULE) / 3600 == pytest.approx(23.71, abs=0.01)  # about a day


def test_reply_codes_and_safe_reasons() -> None:
    assert rules.outcome_of_code(250) is Outcome.SENT
    assert rules.outcome_of_code(451) is Outcome.TRANSIENT
    assert rules.outcome_of_code(421) is Outcome.TRANSIENT
    assert rules.outcome_of_code(550) is Outcome.PERMANENT
    text = "5.1.1 <eloise@exemple.fr>: Recipient address rejected"
    assert rules.safe_reason(550, text) == "550 5.1.1"
    assert "eloise" not in rules.safe_reason(550, text)


def test_ids_are_derived_from_the_event() -> None:
    assert rules.send_id("e-1") == rules.send_id("e-1") == "email:e-1"
    assert rules.message_id("e-1", "avis.local") == "<e-1@avis.local>"


def test_who_may_read() -> None:
    assert rules.may_read(Principal(sub="c", role="coordinator"), "p-1")
    assert rules.may_read(Principal(sub="p-1", role="patient"), "p-1")
    assert not rules.may_read(Principal(sub="p-2", role="patient"), "p-1")
    assert not rules.may_read(Principal(sub="p-1", role="patient"), None)
    assert not rules.may_read(Principal(sub="r", role="reviewer"), "p-1")


def test_the_schedule_reads_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVIS_NOTIFY_RETRY_SCHEDULE", "1,2.5,10")
    assert Settings().retry_schedule == (1.0, 2.5, 10.0)


def test_the_oldest_fall_out_of_a_subscriptions_latest_deliveries() -> None:
    assert rules.fallen_out(["a", "b", "c"], keep=3) == []
    assert rules.fallen_out(["a", "b", "c", "d"], keep=3) == ["a"]
    assert rules.fallen_out(["a", "b", "c", "d", "e"], keep=3) == ["a", "b"]


def test_an_erased_case_is_told_nothing_more_and_its_partner_neither() -> None:
    erased = CaseView(submitted=True, told_due=D1, erased=True)
    tz = ZoneInfo("Europe/Paris")
    now = datetime.now(UTC)
    for payload in (
        CaseSubmitted.model_construct(case_id="c", case_url="http://x/c"),
        ReviewAssigned.model_construct(case_id="c", due_at=now, specialty=Specialty.ONCOLOGY),
        ReportReady.model_construct(case_id="c", version=1, report_id="r", report_url="u"),
        CaseWithdrawn.model_construct(case_id="c", withdrawn_at=now),
    ):
        read = rules.reading(payload, erased, tz)
        assert read.decision.send is None and not read.decision.hooks, type(payload).__name__
        assert not read.decision.park and read.decision.then == erased
        # Before its erasure, the same event is read as ever: an email, or a webhook.
        before = rules.reading(payload, replace(erased, erased=False), tz).decision
        assert before.send is not None or before.hooks, type(payload).__name__
    # Not even parked when it came before the submission: nothing waits for an erased case.
    assert not rules.reading(payload, CaseView(erased=True), tz).decision.park


def test_only_the_erasure_email_outlives_its_cases_erasure() -> None:
    assert [t for t in Template if rules.outlives_erasure(t)] == [Template.ERASURE_DONE]


def test_an_erasure_cancels_every_send_but_the_email_that_tells_it_is_done() -> None:
    sends = ["email:e1", "email:e2", "email:e3"]
    assert rules.cancelled_by_erasure(sends, "email:e3") == ["email:e1", "email:e2"]
    assert rules.cancelled_by_erasure(sends, None) == sends  # no notice: all of them


def test_the_erasure_email_is_worked_until_its_address_is_destroyed() -> None:
    done = (SendStatus.SENT, SendStatus.FAILED, SendStatus.CANCELLED)
    assert rules.still_to_work(SendStatus.QUEUED, Template.CASE_RECEIVED, notice_kept=False)
    assert rules.still_to_work(SendStatus.QUEUED, Template.ERASURE_DONE, notice_kept=False)
    for status in done:
        # Sent, given up or cancelled, its address still kept (a crash before its key went).
        assert rules.still_to_work(status, Template.ERASURE_DONE, notice_kept=True)
        assert not rules.still_to_work(status, Template.ERASURE_DONE, notice_kept=False)
        assert not rules.still_to_work(status, Template.REPORT_READY, notice_kept=True)
