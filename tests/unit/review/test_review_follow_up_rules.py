"""Follow-up questions, without a store: who may ask, the three questions and the period after
the report (each refusal a 409 saying which rule), the due date and the ids."""

from datetime import UTC, datetime, timedelta

import pytest

from avis.review.rules import (
    ACTIONS,
    MAX_FOLLOW_UPS,
    assignment_of_follow_up,
    check_may_answer_follow_up,
    check_may_ask_follow_up,
    follow_up_aad,
    follow_up_due,
    follow_up_id_for,
    may_ask_follow_up,
)
from avis.shared.problems import Problem
from avis.shared.security import Principal

REPORTED = datetime(2026, 3, 2, 9, 30, 15, 123000, tzinfo=UTC)
PATIENT = Principal(sub="patient-1", role="patient")
PARTNER = Principal(sub="client-1", role="partner", partner_id="clinic-1")


def _refusal(**given: object) -> Problem:
    with pytest.raises(Problem) as refused:
        check_may_ask_follow_up(**given)  # type: ignore[arg-type]
    assert refused.value.status == 409
    return refused.value


def test_three_questions_within_the_period_and_no_fourth() -> None:
    for asked in range(MAX_FOLLOW_UPS):
        check_may_ask_follow_up(
            reported_at=REPORTED, asked=asked, at=REPORTED + timedelta(days=1), period_days=30
        )
    fourth = _refusal(
        reported_at=REPORTED, asked=3, at=REPORTED + timedelta(days=1), period_days=30
    )
    assert fourth.type.endswith("follow-up-limit") and "3 follow-up questions" in fourth.detail


def test_a_question_after_the_period_or_before_the_report_is_refused() -> None:
    check_may_ask_follow_up(
        reported_at=REPORTED, asked=0, at=REPORTED + timedelta(days=30), period_days=30
    )
    late = _refusal(
        reported_at=REPORTED,
        asked=0,
        at=REPORTED + timedelta(days=30, milliseconds=1),
        period_days=30,
    )
    assert late.type.endswith("follow-up-period-over") and "30 days" in late.detail
    early = _refusal(reported_at=None, asked=0, at=REPORTED, period_days=30)
    assert early.type.endswith("follow-up-no-report")


def test_the_patient_or_the_filing_partner_asks_nobody_else() -> None:
    assert may_ask_follow_up(PATIENT, patient_id="patient-1", partner_id=None)
    assert not may_ask_follow_up(PATIENT, patient_id="patient-2", partner_id="clinic-1")
    assert not may_ask_follow_up(PATIENT, patient_id=None, partner_id=None)
    assert may_ask_follow_up(PARTNER, patient_id="patient-1", partner_id="clinic-1")
    assert not may_ask_follow_up(PARTNER, patient_id=None, partner_id="clinic-2")
    assert not may_ask_follow_up(PARTNER, patient_id=None, partner_id=None)
    for role in ("reviewer", "coordinator", "service"):
        who = Principal(sub="patient-1", role=role, partner_id="clinic-1")
        assert not may_ask_follow_up(who, patient_id="patient-1", partner_id="clinic-1")


def test_a_question_is_answered_once() -> None:
    check_may_answer_follow_up(answered=False)
    with pytest.raises(Problem) as twice:
        check_may_answer_follow_up(answered=True)
    assert twice.value.status == 409 and twice.value.type.endswith("follow-up-answered")


def test_ids_due_dates_and_bindings() -> None:
    assignment = "8b0c2a4e-1f3d-4c5b-9a6e-7d8f9a0b1c2d-r01"
    ids = [follow_up_id_for(assignment, n) for n in (1, 2, 3)]
    assert len(set(ids)) == 3
    assert all(assignment_of_follow_up(i) == assignment for i in ids)
    assert follow_up_due(REPORTED, 7) == REPORTED + timedelta(days=7)
    assert follow_up_aad(ids[0], "question") != follow_up_aad(ids[0], "answer")
    assert {"follow-up.create", "follow-up.read", "follow-up.answer"} <= set(ACTIONS)
