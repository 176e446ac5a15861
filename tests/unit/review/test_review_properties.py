"""Properties of review's pure rules over generated directories, cases and callers (no store):
matching never goes over capacity, never picks a conflicted, declining or unfit reviewer, and
always picks someone when someone fits; an assignment only moves forward; a reviewer only sees
their own."""

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from avis.review.models import AssignmentStatus
from avis.review.rules import (
    CaseNeeds,
    ReviewerFit,
    Rule,
    assignments_reviewer,
    check_assignment_access,
    exclusion,
    match,
    may_accept,
    may_decline,
    may_write_first_opinion,
    same_institution,
)
from avis.shared.problems import Problem
from avis.shared.security import Principal

SPECIALTIES = ["cardiology", "oncology", "neurology"]
LANGUAGES = ["fr", "en"]
INSTITUTIONS = [None, "HOSP-A", "hosp-a ", "HOSP-B"]
IDS = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6)


@st.composite
def reviewers(draw: st.DrawFn) -> list[ReviewerFit]:
    ids = draw(st.lists(IDS, unique=True, max_size=8))
    pool = []
    for rid in ids:
        capacity = draw(st.integers(0, 4))
        pool.append(
            ReviewerFit(
                id=rid,
                specialties=frozenset(draw(st.sets(st.sampled_from(SPECIALTIES), min_size=1))),
                languages=frozenset(draw(st.sets(st.sampled_from(LANGUAGES), min_size=1))),
                institution_code=draw(st.sampled_from(INSTITUTIONS)),
                capacity=capacity,
                load=draw(st.integers(0, 6)),
                active=draw(st.booleans()),
            )
        )
    return pool


@st.composite
def cases(draw: st.DrawFn, pool: list[ReviewerFit]) -> CaseNeeds:
    known = [r.id for r in pool] or ["nobody"]
    return CaseNeeds(
        specialty=draw(st.sampled_from(SPECIALTIES)),
        language=draw(st.sampled_from(LANGUAGES)),
        physician_institution=draw(st.sampled_from(INSTITUTIONS)),
        declined_by=frozenset(draw(st.sets(st.sampled_from(known), max_size=3))),
    )


@given(st.data())
def test_the_chosen_reviewer_fits_in_every_respect(data: st.DataObject) -> None:
    pool = data.draw(reviewers())
    case = data.draw(cases(pool))
    decision = match(case, pool)
    if decision.chosen is None:
        assert decision.rule is Rule.NOBODY_FITS
        assert all(exclusion(case, r) is not None for r in pool), "someone fitted"
        return
    chosen = next(r for r in pool if r.id == decision.chosen)
    assert chosen.active
    assert chosen.load < chosen.capacity, "never over capacity"
    assert not same_institution(case.physician_institution, chosen.institution_code)
    assert chosen.id not in case.declined_by, "never a reviewer who declined the case"
    assert case.specialty in chosen.specialties and case.language in chosen.languages
    eligible = [r for r in pool if exclusion(case, r) is None]
    assert chosen.load == min(r.load for r in eligible), "the least loaded"
    assert chosen.id == min(r.id for r in eligible if r.load == chosen.load), "then by id"
    assert {c.reviewer_id for c in decision.candidates} == {r.id for r in pool}


@given(st.data())
def test_matching_a_stream_of_cases_never_fills_anyone_beyond_capacity(
    data: st.DataObject,
) -> None:
    pool = {r.id: r for r in data.draw(reviewers())}
    for _ in range(data.draw(st.integers(0, 20))):
        case = data.draw(cases(list(pool.values())))
        chosen = match(case, pool.values()).chosen
        if chosen is not None:
            r = pool[chosen]
            pool[chosen] = ReviewerFit(
                r.id, r.specialties, r.languages, r.institution_code, r.capacity, r.load + 1, True
            )
            assert pool[chosen].load <= r.capacity


ORDER = {
    AssignmentStatus.ASSIGNED: 0,
    AssignmentStatus.ACCEPTED: 1,
    AssignmentStatus.COMPLETED: 2,
    AssignmentStatus.DECLINED: 1,
    AssignmentStatus.CANCELLED: 3,
}
NEXT = {  # what each action moves an assignment to, when it writes anything
    "accept": (may_accept, AssignmentStatus.ACCEPTED),
    "decline": (may_decline, AssignmentStatus.DECLINED),
    "opinion": (may_write_first_opinion, AssignmentStatus.COMPLETED),
}


@given(st.lists(st.sampled_from(sorted(NEXT)), max_size=12))
def test_an_assignment_only_moves_forward(actions: list[str]) -> None:
    status = AssignmentStatus.ASSIGNED
    for action in actions:
        allowed, target = NEXT[action]
        try:
            writes = allowed(status)
        except Problem as refused:
            refusal = refused.status
            assert refusal == 409
            continue
        if writes:
            assert ORDER[target] > ORDER[status], (status, action)
            assert status in (AssignmentStatus.ASSIGNED, AssignmentStatus.ACCEPTED)
            status = target
    if status is AssignmentStatus.DECLINED:
        with pytest.raises(Problem):
            may_accept(status)


@given(IDS, IDS, st.sampled_from(["reviewer", "coordinator", "patient"]), st.none() | IDS)
def test_a_reviewer_sees_only_their_own_assignments(
    sub: str, owner: str, role: str, asked: str | None
) -> None:
    principal = Principal(sub=sub, role=role)  # type: ignore[arg-type]
    try:
        check_assignment_access(principal, owner)
        seen = True
    except Problem as refused:
        seen, refusal = False, refused.status
        assert refusal == 403
    assert seen == (role == "coordinator" or owner == sub)
    try:
        listed = assignments_reviewer(principal, asked)
    except Problem:
        assert role != "coordinator" and asked not in (None, sub)
        return
    assert listed == (asked if role == "coordinator" else sub)
