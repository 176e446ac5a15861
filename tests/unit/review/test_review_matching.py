"""Matching rules: specialty, language, institution, capacity, least load, tie-break, declines."""

from avis.review.rules import (
    CaseNeeds,
    Exclusion,
    ReviewerFit,
    Rule,
    exclusion,
    match,
    match_in_turn,
    same_institution,
)

CASE = CaseNeeds(specialty="cardiology", language="fr", physician_institution="HOSP-A")


def reviewer(
    rid: str,
    *,
    specialties: tuple[str, ...] = ("cardiology",),
    languages: tuple[str, ...] = ("fr",),
    institution: str | None = "HOSP-B",
    capacity: int = 3,
    load: int = 0,
    active: bool = True,
) -> ReviewerFit:
    return ReviewerFit(
        id=rid,
        specialties=frozenset(specialties),
        languages=frozenset(languages),
        institution_code=institution,
        capacity=capacity,
        load=load,
        active=active,
    )


def test_specialty_must_match() -> None:
    decision = match(CASE, [reviewer("a", specialties=("oncology",)), reviewer("b")])
    assert decision.chosen == "b"
    assert exclusion(CASE, reviewer("a", specialties=("oncology",))) is Exclusion.SPECIALTY


def test_reviewer_must_read_the_patients_language() -> None:
    decision = match(CASE, [reviewer("a", languages=("en",)), reviewer("b", load=2)])
    assert decision.chosen == "b"
    assert decision.rule is Rule.ONLY_CANDIDATE
    excluded = {c.reviewer_id: c.excluded for c in decision.candidates}
    assert excluded == {"a": "language", "b": None}


def test_never_the_treating_physicians_institution() -> None:
    same_place = reviewer("a", institution="hosp-a ")  # case and spaces do not hide it
    decision = match(CASE, [same_place])
    assert decision.chosen is None
    assert decision.rule is Rule.NOBODY_FITS
    assert decision.candidates[0].excluded == Exclusion.INSTITUTION_CONFLICT
    assert same_institution("HOSP-A", " hosp-a")
    assert not same_institution(None, None), "no institution on either side is no conflict"
    assert exclusion(CaseNeeds("cardiology", "fr", None), reviewer("a", institution=None)) is None


def test_under_capacity_only() -> None:
    full = reviewer("a", capacity=2, load=2)
    assert exclusion(CASE, full) is Exclusion.AT_CAPACITY
    assert exclusion(CASE, reviewer("a", capacity=0)) is Exclusion.AT_CAPACITY
    assert exclusion(CASE, full, override_capacity=True) is None
    assert match(CASE, [full]).chosen is None


def test_inactive_reviewers_are_never_chosen() -> None:
    assert match(CASE, [reviewer("a", active=False)]).chosen is None
    assert (
        exclusion(CASE, reviewer("a", active=False), override_capacity=True) is Exclusion.INACTIVE
    )


def test_least_load_wins() -> None:
    decision = match(CASE, [reviewer("a", load=2), reviewer("b", load=1), reviewer("c", load=3)])
    assert decision.chosen == "b"
    assert decision.rule is Rule.LEAST_LOAD


def test_ties_go_to_the_smallest_id_whatever_the_order() -> None:
    pool = [reviewer("rev-b", load=1), reviewer("rev-a", load=1), reviewer("rev-c", load=2)]
    for ordering in (pool, list(reversed(pool))):
        decision = match(CASE, ordering)
        assert decision.chosen == "rev-a"
        assert decision.rule is Rule.TIE_BREAK_BY_ID
        assert [c.reviewer_id for c in decision.candidates] == ["rev-a", "rev-b", "rev-c"]


def test_a_reviewer_who_declined_is_not_chosen_again() -> None:
    declined = CaseNeeds("cardiology", "fr", "HOSP-A", declined_by=frozenset({"a"}))
    decision = match(declined, [reviewer("a"), reviewer("b", load=2)])
    assert decision.chosen == "b"
    assert exclusion(declined, reviewer("a"), override_capacity=True) is Exclusion.DECLINED_BEFORE
    assert match(declined, [reviewer("a")]).chosen is None


def test_load_counts_before_ids() -> None:
    decision = match(CASE, [reviewer("a", load=1), reviewer("z", load=0)])
    assert decision.chosen == "z"


def test_nobody_at_all() -> None:
    decision = match(CASE, [])
    assert (decision.chosen, decision.rule, decision.candidates) == (None, Rule.NOBODY_FITS, ())


def test_cases_decided_in_turn_count_each_choice_for_the_next() -> None:
    derm = CaseNeeds(specialty="dermatology", language="fr", physician_institution="HOSP-A")
    pool = [
        reviewer("a", capacity=2, load=1),
        reviewer("b", capacity=1),
        reviewer("d", specialties=("dermatology",), capacity=1),
    ]
    decisions = match_in_turn([CASE, derm, CASE, CASE, derm], pool)
    # b (load 0) first; then b is full (counted), so a alone; then nobody: both are full
    assert [d.chosen for d in decisions] == ["b", "d", "a", None, None]
    assert decisions[2].rule is Rule.ONLY_CANDIDATE
    assert [c.excluded for c in decisions[2].candidates] == [None, "at_capacity"]
    assert decisions[3].rule is Rule.NOBODY_FITS
    # each decision's candidates are its specialty's, with the loads as the batch left them
    assert [(c.reviewer_id, c.load) for c in decisions[3].candidates] == [("a", 2), ("b", 1)]
    assert [(c.reviewer_id, c.load) for c in decisions[4].candidates] == [("d", 1)]


def test_cases_decided_in_turn_alone_are_decided_as_by_match() -> None:
    pool = [reviewer("a", load=2), reviewer("b", load=1), reviewer("c", specialties=("urology",))]
    only = match_in_turn([CASE], pool)[0]
    assert only == match(CASE, pool[:2])
