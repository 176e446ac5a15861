"""The second reading, without a store: when an opinion is held for a second reader, who may be
chosen (never the first, never with a conflict of interest, under capacity), who may read,
agree and comment, what each state allows, and whether a correction after the agreement goes
back to the same reader (by the first pick's rules, capacity included)."""

import pytest

from avis.review.models import SecondReadingReason, SecondReadingState
from avis.review.rules import (
    ACTIONS,
    CaseNeeds,
    Exclusion,
    ReviewerFit,
    Rule,
    check_may_answer,
    check_second_reader,
    comments_aad,
    holds_opinion,
    match,
    may_read_reading,
    needs_reason,
    opinion_language,
    reading_load_id,
    reading_needs,
    reading_of_load,
    reads_again,
    reread,
    second_reading_reason,
)
from avis.shared.problems import Problem
from avis.shared.security import Principal


def _reviewer(rid: str, *, load: int = 0, institution: str | None = None) -> ReviewerFit:
    return ReviewerFit(
        id=rid,
        specialties=frozenset({"oncology"}),
        languages=frozenset({"fr"}),
        institution_code=institution,
        capacity=2,
        load=load,
    )


def _who(sub: str, role: str = "reviewer") -> Principal:
    return Principal(sub=sub, role=role)  # type: ignore[arg-type]


def test_the_coordinators_rules_come_first_then_the_first_readers_request() -> None:
    def reason(asked: bool, specialties: list[str], urgencies: list[str]) -> object:
        return second_reading_reason(
            asked=asked,
            specialty="oncology",
            urgency="urgent",
            specialties=specialties,
            urgencies=urgencies,
        )

    assert reason(False, [], []) is None
    assert reason(False, ["cardiology"], ["routine"]) is None
    assert reason(False, ["oncology"], []) is SecondReadingReason.COORDINATOR_RULE
    assert reason(True, [], ["urgent"]) is SecondReadingReason.COORDINATOR_RULE
    assert reason(True, ["cardiology"], []) is SecondReadingReason.FIRST_READER


def test_the_second_reader_is_never_the_first_nor_in_conflict_nor_full() -> None:
    needs = CaseNeeds(
        specialty="oncology", language="fr", physician_institution="750712184", first_reader="a"
    )
    decision = match(
        needs,
        [
            _reviewer("a"),  # wrote the opinion, least loaded, smallest id
            _reviewer("b", institution=" 750712184 "),  # the treating physician's institution
            _reviewer("c", load=2),  # at capacity
            _reviewer("d", load=1),
        ],
    )
    assert decision.chosen == "d"
    why = {c.reviewer_id: c.excluded for c in decision.candidates}
    assert why == {
        "a": Exclusion.FIRST_READER.value,
        "b": Exclusion.INSTITUTION_CONFLICT.value,
        "c": Exclusion.AT_CAPACITY.value,
        "d": None,
    }


def test_nobody_reads_when_only_the_first_fits() -> None:
    needs = CaseNeeds(specialty="oncology", language="fr", first_reader="a")
    assert match(needs, [_reviewer("a")]).chosen is None


def test_a_reading_holds_new_versions_until_agreed() -> None:
    assert not holds_opinion(None)
    assert not holds_opinion(SecondReadingState.AGREED)
    assert not holds_opinion(SecondReadingState.WITHDRAWN)
    for state in (
        SecondReadingState.UNMATCHED,
        SecondReadingState.READING,
        SecondReadingState.COMMENTED,
    ):
        assert holds_opinion(state)


def test_only_a_reading_to_read_is_answered() -> None:
    check_may_answer(SecondReadingState.READING)
    for state in (
        SecondReadingState.UNMATCHED,
        SecondReadingState.COMMENTED,
        SecondReadingState.AGREED,
        SecondReadingState.WITHDRAWN,
    ):
        with pytest.raises(Problem) as refused:
            check_may_answer(state)
        assert refused.value.status == 409


def test_only_the_second_reader_answers_and_only_the_two_and_coordinators_read() -> None:
    check_second_reader(_who("b"), "b")
    for sub, second in (("a", "b"), ("b", None)):
        with pytest.raises(Problem) as refused:
            check_second_reader(_who(sub), second)
        assert refused.value.status == 403
    assert may_read_reading(_who("a"), "a", "b") and may_read_reading(_who("b"), "a", "b")
    assert may_read_reading(_who("x", "coordinator"), "a", "b")
    assert not may_read_reading(_who("c"), "a", "b")
    assert needs_reason("second-reading.read"), "the comments are clinical text"


def test_a_reading_counts_in_the_load_apart_from_assignments() -> None:
    entry = reading_load_id("case:1")
    assert reading_of_load(entry) == "case:1"
    assert reading_of_load("case:1") is None
    assert comments_aad("case:1", 1) != comments_aad("case:1", 2)


def test_every_action_of_the_reading_reads_in_plain_words() -> None:
    for action in ("second-reading.read", "second-reading.comment", "second-reading.agree"):
        done, tried = ACTIONS[action]
        assert done and tried


def test_a_correction_after_the_agreement_is_read_again_while_its_reason_holds() -> None:
    def again(reason: SecondReadingReason, urgencies: list[str]) -> bool:
        return reads_again(
            reason, specialty="oncology", urgency="urgent", specialties=[], urgencies=urgencies
        )

    assert again(SecondReadingReason.FIRST_READER, [])
    assert again(SecondReadingReason.COORDINATOR_RULE, ["urgent"])
    assert not again(SecondReadingReason.COORDINATOR_RULE, [])  # the rule was lifted since


def test_a_reread_goes_to_the_same_reader_only_with_room_as_at_the_first_pick() -> None:
    case = CaseNeeds(specialty="oncology", language="fr", first_reader="first")
    free = reread(case, _reviewer("second", load=1))
    assert (free.chosen, free.rule) == ("second", Rule.ONLY_CANDIDATE)
    full = reread(case, _reviewer("second", load=2))
    assert (full.chosen, full.rule) == (None, Rule.NOBODY_FITS), "as nobody fitting at first"
    assert [(c.reviewer_id, c.excluded) for c in full.candidates] == [("second", "at_capacity")]
    # The same capacity rule as the first pick, whoever else there is.
    assert match(case, [_reviewer("second", load=2)]).chosen is None
    # Every other rule of the first pick too: gone from the directory, inactive, in conflict.
    assert reread(case, None).chosen is None
    gone = ReviewerFit(
        id="second",
        specialties=frozenset({"oncology"}),
        languages=frozenset({"fr"}),
        institution_code=None,
        capacity=2,
        load=0,
        active=False,
    )
    assert reread(case, gone).candidates[0].excluded == Exclusion.INACTIVE.value
    conflict = CaseNeeds(specialty="oncology", language="fr", physician_institution="H-1")
    assert reread(conflict, _reviewer("second", institution="h-1")).chosen is None


def test_the_opinion_is_in_the_patients_language_unless_the_round_is_international() -> None:
    assert (
        opinion_language("fr", international=False, to_specialist=None, first_reader_languages=[])
        == "fr"
    )
    # International: the language the case was translated into for the specialist...
    assert (
        opinion_language(
            "fr", international=True, to_specialist="en", first_reader_languages=["de", "en"]
        )
        == "en"
    )
    # ...or, before any translation is written, the one the translation would take.
    assert (
        opinion_language(
            "fr", international=True, to_specialist=None, first_reader_languages=["en", "de"]
        )
        == "de"
    )


def test_an_international_second_reader_is_matched_on_the_opinions_language() -> None:
    """The patient reads French; the first specialist wrote in English through a translator:
    the second reader must read English, French alone does not do, and the patient's consent
    to a review through a translator lets nobody through (no translator carries a reading)."""
    case = CaseNeeds(specialty="oncology", language="fr", international_review=True)
    needs = reading_needs(case, first_reader="first", language="en")
    french = _reviewer("a-french")
    english = ReviewerFit(
        id="b-english",
        specialties=frozenset({"oncology"}),
        languages=frozenset({"en"}),
        institution_code=None,
        capacity=2,
        load=1,
    )
    decision = match(needs, [french, english])
    assert decision.chosen == "b-english"
    assert decision.rule is Rule.ONLY_CANDIDATE
    why = {c.reviewer_id: c.excluded for c in decision.candidates}
    assert why == {"a-french": Exclusion.OPINION_LANGUAGE.value, "b-english": None}
    only_french = match(needs, [french])
    assert (only_french.chosen, only_french.rule) == (None, Rule.NOBODY_FITS)
    assert reread(needs, french).chosen is None
    assert reread(needs, english).chosen == "b-english"
