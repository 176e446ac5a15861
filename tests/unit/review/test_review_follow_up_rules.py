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
    follow_up_report_seq,
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


def test_an_answer_while_another_question_is_open_is_ordered_before_it() -> None:
    # Asked at 5 and 6; the first answered at 7 while the second is open: its report version
    # goes out below 6, so intake (which orders by the number) keeps the case in review, in
    # whatever order it hears of the facts; the last answer's version (8) is the newest.
    assert follow_up_report_seq(7, [6]) == 5
    assert follow_up_report_seq(8, [5, 7]) == 4
    assert follow_up_report_seq(8, []) == 8
    assert follow_up_report_seq(8, [0]) == 8  # asked before the number was kept: as before
    states = {
        facts: _status_after(facts)
        for facts in [
            (("asked", 5), ("asked", 6), ("report", 5)),
            (("report", 5), ("asked", 6), ("asked", 5)),
            (("asked", 6), ("report", 5), ("asked", 5)),
        ]
    }
    assert set(states.values()) == {"in_review"}
    assert _status_after((("asked", 5), ("report", 5), ("asked", 6), ("report", 8))) == (
        "report_ready"
    )


def _status_after(facts: tuple[tuple[str, int], ...]) -> str:
    """The status intake keeps after the facts, in this order, from a report at 4."""
    from avis.intake.models import CaseStatus, TimelineKind
    from avis.intake.rules import CaseState, Change, decide

    state = CaseState(status=CaseStatus.REPORT_READY, seq=4)
    for n, (kind, seq) in enumerate(facts):
        change = Change(
            TimelineKind.FOLLOW_UP_ASKED if kind == "asked" else TimelineKind.REPORT_READY,
            f"event-{n}",
            REPORTED,
            seq=seq,
        )
        decision = decide(state, change)
        if decision.apply and decision.status is not None:
            state = CaseState(status=decision.status, seq=decision.seq or state.seq)
    return str(state.status)


def test_a_correction_while_a_question_is_open_keeps_the_case_in_review() -> None:
    """Report at 4, a question asked at 5 and still open, the opinion corrected at 6: the
    corrected version's report goes out below the question (4), so intake keeps the case in
    review until the answer (7); with no question open, a correction's report is its own."""
    from avis.review.store import AssignmentDoc, FollowUpEntry
    from avis.shared.sealing import Sealed

    sealed = Sealed(alg="A256GCM", kid="k", nonce="AAAAAAAAAAAAAAAA", ct="AAAAAAAAAAAAAAAA")
    asked = FollowUpEntry(
        id="fu-1", number=1, asked_at=REPORTED, due_at=REPORTED, question=sealed, seq=5
    )
    doc = AssignmentDoc.model_validate(
        {
            "_id": "c-1.r1",
            "case_id": "c-1",
            "round": 1,
            "reviewer_id": "rev-1",
            "status": "completed",
            "specialty": "cardiology",
            "urgency": "routine",
            "language": "fr",
            "assigned_at": REPORTED,
            "due_at": REPORTED,
            "sort_key": "x",
            "follow_ups": [asked.model_dump()],
        }
    )
    correction = doc.report_seq(6)
    assert correction == 4
    assert _status_after((("asked", 5), ("report", correction))) == "in_review"
    assert _status_after((("report", correction), ("asked", 5))) == "in_review"
    answered = asked.model_copy(update={"answered_at": REPORTED})
    assert doc.model_copy(update={"follow_ups": [answered]}).report_seq(8) == 8
    assert _status_after((("asked", 5), ("report", correction), ("report", 7))) == "report_ready"
