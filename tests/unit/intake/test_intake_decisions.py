"""Intake's decisions, without HTTP, Kafka or a store: status ordering, who may read what,
consent, birth dates, references and case ids."""

import dataclasses
import re
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from avis.intake.models import (
    REFERENCE_PATTERN,
    CaseCreate,
    CaseStatus,
    SubmitIn,
    TimelineKind,
)
from avis.intake.rules import (
    RANK,
    REVIEWER_READABLE,
    Access,
    CaseState,
    Change,
    Scope,
    after_restore,
    age_on,
    block_range,
    check_answerable,
    check_birth_date,
    check_consent,
    check_draft,
    decide,
    format_reference,
    listing_scope,
    may_read,
    may_read_clinical,
    new_case_id,
    refblock_id,
)
from avis.shared.problems import Problem
from avis.shared.security import Principal
from avis.shared.text import UUID_PATTERN

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def change(kind: TimelineKind, n: int = 1, assignment: str | None = "as-1", **kw: object) -> Change:
    values: dict[str, object] = {
        "kind": kind,
        "event_id": f"ev-{kind}-{n}",
        "at": T0 + timedelta(minutes=n),
        "assignment_id": assignment,
        "reviewer_id": "rev-1",
    }
    values.update(kw)
    return Change(**values)  # type: ignore[arg-type]


def state(status: CaseStatus, **kw: object) -> CaseState:
    return CaseState(status=status, **kw)  # type: ignore[arg-type]


# --- status ordering --------------------------------------------------------------------------


def test_assignment_moves_a_submitted_case_forward_and_gives_access() -> None:
    decision = decide(state(CaseStatus.SUBMITTED), change(TimelineKind.ASSIGNED))
    assert (
        decision.apply and decision.status == CaseStatus.ASSIGNED and decision.reviewer == "assign"
    )


def test_accepted_moves_to_in_review_only_for_the_current_assignment() -> None:
    current = state(CaseStatus.ASSIGNED, assignment_id="as-1", assignment_at=T0)
    assert decide(current, change(TimelineKind.ACCEPTED)).status == CaseStatus.IN_REVIEW
    other = decide(current, change(TimelineKind.ACCEPTED, assignment="as-0"))
    assert not other.apply and "assignment" in other.reason


def test_declined_takes_access_away_and_keeps_the_status() -> None:
    current = state(CaseStatus.ASSIGNED, assignment_id="as-1", assignment_at=T0)
    decision = decide(current, change(TimelineKind.DECLINED))
    assert (
        decision.apply and decision.status == CaseStatus.ASSIGNED and decision.reviewer == "clear"
    )


def test_a_new_assignment_after_a_decline_applies() -> None:
    after_decline = state(CaseStatus.ASSIGNED, assignment_id=None, assignment_at=T0)
    decision = decide(after_decline, change(TimelineKind.ASSIGNED, 5, assignment="as-2"))
    assert decision.apply and decision.reviewer == "assign"


def test_an_assignment_older_than_the_current_one_changes_nothing() -> None:
    current = state(
        CaseStatus.ASSIGNED, assignment_id="as-2", assignment_at=T0 + timedelta(hours=1)
    )
    assert not decide(current, change(TimelineKind.ASSIGNED, 1, assignment="as-1")).apply


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (CaseStatus.IN_REVIEW, TimelineKind.ASSIGNED),
        (CaseStatus.REPORT_READY, TimelineKind.ASSIGNED),
        (CaseStatus.REPORT_READY, TimelineKind.ACCEPTED),
    ],
)
def test_an_older_event_arriving_late_changes_nothing(
    status: CaseStatus, kind: TimelineKind
) -> None:
    current = state(status, assignment_id="as-1", assignment_at=T0)
    decision = decide(current, change(kind, 9))
    assert not decision.apply and decision.reason


def test_a_redelivered_event_changes_nothing() -> None:
    event = change(TimelineKind.REPORT_READY)
    current = state(CaseStatus.REPORT_READY, timeline_ids=frozenset({event.event_id}))
    assert decide(current, event).reason == "already in the timeline"


def test_review_completed_adds_an_entry_without_moving_the_status() -> None:
    decision = decide(state(CaseStatus.IN_REVIEW), change(TimelineKind.REVIEW_COMPLETED))
    assert decision.apply and decision.status == CaseStatus.IN_REVIEW


def test_a_corrected_report_adds_an_entry_and_stays_ready() -> None:
    decision = decide(state(CaseStatus.REPORT_READY), change(TimelineKind.REPORT_READY, 2))
    assert decision.apply and decision.status == CaseStatus.REPORT_READY


@pytest.mark.parametrize("status", [CaseStatus.DRAFT, CaseStatus.WITHDRAWN])
@pytest.mark.parametrize("kind", list(TimelineKind))
def test_drafts_and_withdrawn_cases_take_no_event(status: CaseStatus, kind: TimelineKind) -> None:
    assert not decide(state(status, assignment_id="as-1"), change(kind)).apply


KINDS = [
    TimelineKind.ASSIGNED,
    TimelineKind.ACCEPTED,
    TimelineKind.DECLINED,
    TimelineKind.REVIEW_COMPLETED,
    TimelineKind.REPORT_READY,
]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(KINDS), st.integers(0, 50), st.sampled_from(["as-1", "as-2", None])
        ),
        max_size=25,
    )
)
def test_status_never_moves_backwards_whatever_the_order(
    events: list[tuple[TimelineKind, int, str | None]],
) -> None:
    """Any sequence of events, in any order, duplicates included: the rank never decreases."""
    current = state(CaseStatus.SUBMITTED)
    for i, (kind, minute, assignment) in enumerate(events):
        event = Change(kind, f"ev-{i % 7}", T0 + timedelta(minutes=minute), assignment, "rev")
        decision = decide(current, event)
        if not decision.apply:
            continue
        assert decision.status is not None
        assert RANK[decision.status] >= RANK[current.status]
        assignment_id, at = current.assignment_id, current.assignment_at
        if decision.reviewer == "assign":
            assignment_id, at = event.assignment_id, event.at
        elif decision.reviewer == "clear":
            assignment_id = None
        current = CaseState(
            decision.status, current.timeline_ids | {event.event_id}, assignment_id, at
        )


# --- the per-case sequence (a case can go back to review) ----------------------------------


def test_a_newer_fact_moves_a_reported_case_back_to_review() -> None:
    """Ordered by the rank of the status name, `in_review` after `report_ready` was refused."""
    reported = state(CaseStatus.REPORT_READY, assignment_id="as-1", assignment_at=T0, seq=4)
    decision = decide(reported, change(TimelineKind.ACCEPTED, 9, seq=5))
    assert decision.apply and decision.status == CaseStatus.IN_REVIEW and decision.seq == 5


def test_a_report_older_than_the_case_going_back_is_an_entry_and_moves_nothing() -> None:
    back_in_review = state(CaseStatus.IN_REVIEW, assignment_id="as-1", seq=5)
    decision = decide(back_in_review, change(TimelineKind.REPORT_READY, 9, seq=4))
    assert decision.apply and decision.status == CaseStatus.IN_REVIEW and decision.seq is None


def test_a_report_follows_its_own_opinion_by_rank() -> None:
    """A report carries its opinion's number: the same step, after `in_review` by rank."""
    reviewed = state(CaseStatus.IN_REVIEW, assignment_id="as-1", seq=3)
    decision = decide(reviewed, change(TimelineKind.REPORT_READY, 9, seq=3))
    assert decision.status == CaseStatus.REPORT_READY and decision.seq == 3


@pytest.mark.parametrize(
    ("status", "kind", "seq"),
    [
        (CaseStatus.IN_REVIEW, TimelineKind.ASSIGNED, 1),
        (CaseStatus.REPORT_READY, TimelineKind.ACCEPTED, 2),
        (CaseStatus.ASSIGNED, TimelineKind.ACCEPTED, 2),  # accepted a round since ended
    ],
)
def test_an_older_numbered_fact_changes_nothing(
    status: CaseStatus, kind: TimelineKind, seq: int
) -> None:
    current = state(status, assignment_id="as-1", assignment_at=T0, seq=4)
    assert not decide(current, change(kind, 9, seq=seq)).apply


def test_a_fact_without_a_number_only_moves_a_case_forward() -> None:
    """From a producer's copy not yet upgraded: the rank decides, as before sequences."""
    accepted = state(CaseStatus.ASSIGNED, assignment_id="as-1", assignment_at=T0, seq=1)
    forward = decide(accepted, change(TimelineKind.ACCEPTED, 2))
    assert forward.status == CaseStatus.IN_REVIEW and forward.seq == 1
    reported = state(CaseStatus.REPORT_READY, assignment_id="as-1", seq=3)
    assert not decide(reported, change(TimelineKind.ACCEPTED, 5)).apply


@given(st.permutations(list(range(6))))
def test_numbered_facts_in_any_order_end_on_the_newest(order: list[int]) -> None:
    """One round's life, sent back to review after its report, delivered in any order (as two
    topics may): the status ends where the newest fact put it, and an older one never moves it."""
    life = [
        change(TimelineKind.ASSIGNED, 1, seq=1),
        change(TimelineKind.ACCEPTED, 2, seq=2),
        change(TimelineKind.REVIEW_COMPLETED, 3, seq=3),
        change(TimelineKind.REPORT_READY, 4, seq=3),
        change(TimelineKind.ACCEPTED, 5, seq=4, event_id="ev-back"),
        change(TimelineKind.REVIEW_COMPLETED, 6, seq=5, event_id="ev-done-again"),
    ]
    current = state(CaseStatus.SUBMITTED, assignment_id="as-1", assignment_at=T0)
    for i in order:
        decision = decide(current, life[i])
        if decision.apply and decision.status is not None and decision.seq is not None:
            assert (decision.seq, RANK[decision.status]) > (current.seq, RANK[current.status])
            current = dataclasses.replace(current, status=decision.status, seq=decision.seq)
    assert current.status == CaseStatus.IN_REVIEW and current.seq == 4


def test_a_request_for_information_waits_and_its_resumption_goes_back_to_review() -> None:
    """Asked (seq 3), the case awaits the patient; resumed (seq 4) it is back in review: by
    the rank alone, `in_review` after `awaiting_information` would be refused."""
    reviewing = state(CaseStatus.IN_REVIEW, assignment_id="as-1", seq=2)
    asked = decide(reviewing, change(TimelineKind.INFORMATION_REQUESTED, 3, seq=3))
    assert asked.status == CaseStatus.AWAITING_INFORMATION and asked.seq == 3
    waiting = dataclasses.replace(reviewing, status=CaseStatus.AWAITING_INFORMATION, seq=3)
    resumed = decide(waiting, change(TimelineKind.REVIEW_RESUMED, 4, seq=4))
    assert resumed.status == CaseStatus.IN_REVIEW and resumed.seq == 4
    back = dataclasses.replace(waiting, status=CaseStatus.IN_REVIEW, seq=4)
    late = change(TimelineKind.INFORMATION_REQUESTED, 5, seq=3, event_id="ev-late")
    stale = decide(back, late)
    assert stale.apply and stale.status == CaseStatus.IN_REVIEW and stale.seq is None


def test_a_request_of_another_assignment_changes_nothing() -> None:
    reviewing = state(CaseStatus.IN_REVIEW, assignment_id="as-2", seq=5)
    other = change(TimelineKind.INFORMATION_REQUESTED, 3, seq=6, assignment="as-1")
    assert not decide(reviewing, other).apply


def test_records_are_added_while_a_request_is_open_and_answers_are_checked() -> None:
    check_draft(CaseStatus.AWAITING_INFORMATION, "added", request_open=True)
    with pytest.raises(Problem):
        check_draft(CaseStatus.AWAITING_INFORMATION, "added")
    with pytest.raises(Problem):
        check_draft(CaseStatus.AWAITING_INFORMATION, "removed", request_open=True)
    patient = Principal(sub="pat-1", role="patient")
    check_answerable(found=True, open_=True, principal=patient)
    for found, open_, status in ((False, False, 404), (True, False, 409)):
        with pytest.raises(Problem) as refused:
            check_answerable(found=found, open_=open_, principal=patient)
        assert refused.value.status == status
    with pytest.raises(Problem) as reviewer:
        check_answerable(found=True, open_=True, principal=Principal(sub="r", role="reviewer"))
    assert reviewer.value.status == 403


# --- who may read what ------------------------------------------------------------------------

CASE = Access(
    status=CaseStatus.IN_REVIEW, patient_id="pat-1", partner_id="ins-1", reviewer_id="rev-1"
)


@pytest.mark.parametrize(
    ("principal", "read", "clinical"),
    [
        (Principal(sub="pat-1", role="patient"), True, True),
        (Principal(sub="pat-2", role="patient"), False, False),
        (Principal(sub="u", role="partner", partner_id="ins-1"), True, True),
        (Principal(sub="u", role="partner", partner_id="ins-2"), False, False),
        (Principal(sub="rev-1", role="reviewer"), True, True),
        (Principal(sub="rev-2", role="reviewer"), False, False),
        (Principal(sub="c", role="coordinator"), True, True),
        (Principal(sub="s", role="service"), True, False),
        # a partner's subject that happens to equal the patient's id gives nothing
        (Principal(sub="pat-1", role="partner", partner_id="ins-9"), False, False),
    ],
)
def test_who_may_read_a_case(principal: Principal, read: bool, clinical: bool) -> None:
    assert may_read(principal, CASE) is read
    assert may_read_clinical(principal, CASE) is clinical


@pytest.mark.parametrize("status", [CaseStatus.SUBMITTED, CaseStatus.WITHDRAWN])
def test_a_reviewer_reads_only_while_the_review_is_on(status: CaseStatus) -> None:
    reviewer = Principal(sub="rev-1", role="reviewer")
    assert not may_read_clinical(reviewer, dataclasses.replace(CASE, status=status))


def test_lists_are_scoped_by_role() -> None:
    assert listing_scope(Principal(sub="p", role="patient"), None) == Scope("patient_id", "p")
    partner = Principal(sub="u", role="partner", partner_id="ins")
    assert listing_scope(partner, None) == Scope("partner_id", "ins")
    reviewer = Principal(sub="r", role="reviewer")
    assert listing_scope(reviewer, None) == Scope("reviewer_id", "r", REVIEWER_READABLE)
    assert listing_scope(Principal(sub="c", role="coordinator"), None) == Scope()


def test_a_reviewer_lists_only_the_statuses_they_may_read() -> None:
    reviewer = Principal(sub="r", role="reviewer")
    assert listing_scope(reviewer, CaseStatus.SUBMITTED) is None
    in_review = listing_scope(reviewer, CaseStatus.IN_REVIEW)
    assert in_review == Scope("reviewer_id", "r", (CaseStatus.IN_REVIEW,))


# --- consent and birth dates ------------------------------------------------------------------


def submission(*scopes: str, at: datetime = T0) -> SubmitIn:
    return SubmitIn.model_validate(
        {"consent": {"text_version": "v1", "accepted_at": at.isoformat(), "scopes": list(scopes)}}
    )


def test_consent_must_cover_the_review() -> None:
    check_consent(submission("review", "share_with_partner"), T0)
    with pytest.raises(Problem) as refused:
        check_consent(submission("share_with_partner"), T0)
    assert refused.value.status == 422 and refused.value.type.endswith("/consent-required")


def test_consent_cannot_be_given_in_the_future_beyond_clock_skew() -> None:
    check_consent(submission("review", at=T0 + timedelta(minutes=2)), T0)
    with pytest.raises(Problem):
        check_consent(submission("review", at=T0 + timedelta(hours=1)), T0)


def test_consent_needs_a_time_zone_and_a_real_date_time() -> None:
    for at in ("2026-03-01T09:00:00", 1767225600, "1767225600"):
        with pytest.raises(ValidationError):
            SubmitIn.model_validate(
                {"consent": {"text_version": "v1", "accepted_at": at, "scopes": ["review"]}}
            )


@pytest.mark.parametrize(
    ("birth", "ok"),
    [(date(1971, 3, 14), True), (date(2026, 3, 1), True), (date(2026, 3, 2), False),
     (date(1899, 12, 31), False)],
)  # fmt: skip
def test_birth_dates_must_be_plausible(birth: date, ok: bool) -> None:
    if ok:
        check_birth_date(birth, date(2026, 3, 1))
    else:
        with pytest.raises(Problem):
            check_birth_date(birth, date(2026, 3, 1))


def test_age_in_whole_years() -> None:
    assert age_on(date(1984, 2, 29), date(2026, 2, 28)) == 41
    assert age_on(date(1984, 2, 29), date(2026, 3, 1)) == 42


def test_a_draft_refuses_numbers_for_dates_and_drops_repeated_questions() -> None:
    body = {
        "patient": {
            "given_name": "Éloïse",
            "family_name": "Dupré",
            "birth_date": 0,
            "email": "e@example.fr",
            "preferred_language": "fr",
        },
        "specialty": "cardiology",
        "questions": ["risk_benefit"],
        "clinical_summary": "x",
    }
    with pytest.raises(ValidationError):
        CaseCreate.model_validate(body)
    body["patient"]["birth_date"] = "1990-05-01"  # type: ignore[index]
    body["questions"] = ["risk_benefit", "further_tests", "risk_benefit"]
    assert [q.value for q in CaseCreate.model_validate(body).questions] == [
        "risk_benefit",
        "further_tests",
    ]


@pytest.mark.parametrize("name", ["Ana\x00", "Ana\nBel", "   ", "\u0085Ana"])
def test_names_hold_a_visible_character_and_no_control_character(name: str) -> None:
    with pytest.raises(ValidationError):
        CaseCreate.model_validate(
            {
                "patient": {
                    "given_name": name,
                    "family_name": "Dupré",
                    "birth_date": "1990-05-01",
                    "email": "e@example.fr",
                    "preferred_language": "fr",
                },
                "specialty": "cardiology",
                "questions": ["risk_benefit"],
                "clinical_summary": "x",
            }
        )


# --- references and ids ---------------------------------------------------------------------


def test_reference_format() -> None:
    assert format_reference(2026, 123) == "AV-2026-000123"
    assert format_reference(2026, 1_234_567) == "AV-2026-1234567"
    assert re.match(REFERENCE_PATTERN, format_reference(2027, 1))
    with pytest.raises(ValueError, match="start at 1"):
        format_reference(2026, 0)


def test_reference_blocks_do_not_overlap_and_sort_by_number() -> None:
    assert list(block_range(0, 100))[:2] == [1, 2] and block_range(0, 100)[-1] == 100
    assert block_range(1, 100)[0] == 101
    ids = [refblock_id(2026, b) for b in (0, 9, 10, 123)]
    assert ids == sorted(ids)
    assert refblock_id(2026, 9) < refblock_id(2026, 10)


def test_case_ids_are_uuid7_ordered_by_creation() -> None:
    first = new_case_id()
    time.sleep(0.002)
    second = new_case_id()
    for case_id in (first, second):
        assert re.match(UUID_PATTERN, case_id)
        assert uuid.UUID(case_id).version == 7
    assert first < second
    assert len({new_case_id() for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("erased", "key_ref", "key_exists", "action"),
    [
        (False, "k1", True, "keep"),  # a live case
        (False, "k1", False, "erase"),  # erased after the store's copy was taken
        (True, "k1", True, "destroy"),  # its key back from a restored key server
        (True, "k1", False, "keep"),  # erased, its key gone: as it should be
        (False, None, False, "keep"),  # a case sealed under the service's keyring
        (True, None, False, "keep"),
    ],
)
def test_after_a_restore_no_erasure_is_undone(
    erased: bool, key_ref: str | None, key_exists: bool, action: str
) -> None:
    assert after_restore(erased=erased, key_ref=key_ref, key_exists=key_exists) == action


def test_a_second_reading_is_a_timeline_entry_and_keeps_the_status() -> None:
    current = state(CaseStatus.IN_REVIEW, assignment_id="as-1", seq=3)
    for kind in (TimelineKind.SECOND_READING, TimelineKind.SECOND_READING_AGREED):
        decision = decide(current, change(kind, seq=4))
        assert decision.apply and decision.status == CaseStatus.IN_REVIEW
        seen = state(CaseStatus.IN_REVIEW, timeline_ids=frozenset({f"ev-{kind}-1"}))
        assert not decide(seen, change(kind)).apply  # a redelivery adds nothing
