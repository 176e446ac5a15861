"""SLA due dates and the orderings derived from them."""

from datetime import UTC, datetime, timedelta

from avis.review.rules import Sla, assignment_id_for, due_at, queue_key, sort_key
from avis.shared.events import Urgency

AT = datetime(2026, 3, 2, 9, 30, 15, 123000, tzinfo=UTC)


def test_defaults_are_seven_days_routine_three_urgent() -> None:
    assert due_at(AT, Urgency.ROUTINE, Sla()) == AT + timedelta(days=7)
    assert due_at(AT, Urgency.URGENT, Sla()) == AT + timedelta(days=3)
    assert due_at(AT, "urgent", Sla()) == AT + timedelta(days=3)


def test_configured_sla_applies() -> None:
    sla = Sla(routine_days=10, urgent_days=1.5)
    assert due_at(AT, Urgency.ROUTINE, sla) == AT + timedelta(days=10)
    assert due_at(AT, Urgency.URGENT, sla) == AT + timedelta(hours=36)


def test_due_dates_keep_to_the_stores_millisecond_precision() -> None:
    due = due_at(AT, Urgency.URGENT, Sla(urgent_days=0.0000001))
    assert due.microsecond % 1000 == 0
    assert AT <= due < AT + timedelta(milliseconds=10)


def test_queue_order_is_urgent_first_then_oldest() -> None:
    early, late = AT, AT + timedelta(hours=1)
    keys = {
        "routine-early": queue_key(Urgency.ROUTINE, early, "c1"),
        "routine-late": queue_key(Urgency.ROUTINE, late, "c2"),
        "urgent-late": queue_key(Urgency.URGENT, late, "c3"),
        "urgent-early": queue_key(Urgency.URGENT, early, "c4"),
    }
    assert sorted(keys, key=keys.__getitem__) == [
        "urgent-early",
        "urgent-late",
        "routine-early",
        "routine-late",
    ]


def test_assignments_sort_soonest_due_first() -> None:
    assert sort_key(AT, "b") < sort_key(AT, "c") < sort_key(AT + timedelta(seconds=1), "a")


def test_a_cases_rounds_sort_in_order_and_are_stable() -> None:
    ids = [assignment_id_for("case-1", r) for r in (1, 2, 9, 10, 11, 123)]
    assert ids == sorted(ids), "the relay publishes by _id: round 1's decline before round 2"
    assert assignment_id_for("case-1", 2) == assignment_id_for("case-1", 2)
    assert assignment_id_for("case-1", 2) != assignment_id_for("case-2", 2)
