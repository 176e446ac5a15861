"""The second reading, without a store: when an opinion is held for a second reader, who may be
chosen (never the first, never with a conflict of interest, under capacity), who may read,
agree and comment, and what each state allows."""

import pytest

from avis.review.models import SecondReadingReason, SecondReadingState
from avis.review.rules import (
    ACTIONS,
    CaseNeeds,
    Exclusion,
    ReviewerFit,
    check_may_answer,
    check_second_reader,
    comments_aad,
    holds_opinion,
    match,
    may_read_reading,
    needs_reason,
    reading_load_id,
    reading_of_load,
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
