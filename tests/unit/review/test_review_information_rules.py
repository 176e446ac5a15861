"""Requests for more information, without a store: who may ask, the paused SLA clock, the due
date moved by exactly the pause, and the numbering of a case's events."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from avis.review.models import AssignmentStatus
from avis.review.rules import (
    assignment_id_for,
    assignment_of_request,
    check_may_ask,
    check_no_open_request,
    is_overdue,
    next_seq,
    request_expiry,
    request_id_for,
    resumed_due,
)
from avis.shared.problems import Problem

AT = datetime(2026, 3, 2, 9, 30, 15, 123000, tzinfo=UTC)


def test_only_an_accepted_assignment_without_an_open_request_may_ask() -> None:
    check_may_ask(AssignmentStatus.ACCEPTED, open_request=False)
    ended = (AssignmentStatus.ASSIGNED, AssignmentStatus.COMPLETED, AssignmentStatus.DECLINED)
    for status in ended:
        with pytest.raises(Problem) as refused:
            check_may_ask(status, open_request=False)
        assert refused.value.status == 409 and str(status) in refused.value.detail
    with pytest.raises(Problem) as twice:
        check_may_ask(AssignmentStatus.ACCEPTED, open_request=True)
    assert twice.value.type.endswith("information-request-open")


def test_the_opinion_waits_while_a_request_is_open() -> None:
    check_no_open_request(open_request=False)
    with pytest.raises(Problem) as refused:
        check_no_open_request(open_request=True)
    assert refused.value.status == 409


@given(st.integers(0, 40 * 24 * 3600 * 1000))
def test_the_due_date_moves_by_exactly_the_pause(paused_ms: int) -> None:
    due = AT + timedelta(days=7)
    answered = AT + timedelta(milliseconds=paused_ms)
    moved, seconds = resumed_due(due, AT, answered)
    assert moved - due == answered - AT
    assert seconds == paused_ms / 1000


def test_an_answer_stamped_before_the_request_moves_nothing() -> None:
    due = AT + timedelta(days=7)
    assert resumed_due(due, AT, AT - timedelta(seconds=5)) == (due, 0.0)


def test_a_paused_clock_is_not_overdue_unless_it_already_was() -> None:
    due = AT + timedelta(days=1)
    later = AT + timedelta(days=10)
    accepted = AssignmentStatus.ACCEPTED
    assert is_overdue(accepted, due, later)
    assert not is_overdue(accepted, due, later, paused_since=AT), "the clock stands"
    assert is_overdue(accepted, due, later, paused_since=due + timedelta(hours=1))


def test_request_ids_name_their_assignment_and_expire_after_the_setting() -> None:
    assignment = assignment_id_for("0190f1de-7a7b-7c3c-8a55-6b0b6f0c1e2d", 2)
    request = request_id_for(assignment, 1)
    assert assignment_of_request(request) == assignment
    assert request_id_for(assignment, 2) != request
    assert request_expiry(AT, 14) == AT + timedelta(days=14)


def test_a_case_events_are_numbered_after_every_number_used() -> None:
    assert next_seq([]) == 1
    assert next_seq([3]) == 4
    assert next_seq([2, 7, 5]) == 8
