"""International review's matching: a specialist who does not read the patient's language takes
the case only when the patient accepted it and nobody who reads it fits today."""

from dataclasses import replace

import pytest

from avis.intake.rules import accepts_international_review, published_scopes
from avis.review.rules import (
    CaseNeeds,
    Exclusion,
    ReviewerFit,
    Rule,
    check_eligible,
    match,
    needs_translation,
)
from avis.shared.events import ConsentScope
from avis.shared.problems import Problem

ABROAD = CaseNeeds(specialty="cardiology", language="fr", international_review=True)


def reviewer(
    rid: str,
    *,
    languages: tuple[str, ...],
    load: int = 0,
    capacity: int = 3,
    specialties: tuple[str, ...] = ("cardiology",),
) -> ReviewerFit:
    return ReviewerFit(
        id=rid,
        specialties=frozenset(specialties),
        languages=frozenset(languages),
        institution_code=None,
        capacity=capacity,
        load=load,
    )


def test_without_the_patients_consent_the_case_waits() -> None:
    decision = match(
        replace(ABROAD, international_review=False), [reviewer("en", languages=("en",))]
    )
    assert (decision.chosen, decision.rule) == (None, Rule.NOBODY_FITS)
    assert decision.candidates[0].excluded == Exclusion.LANGUAGE


def test_a_reader_of_the_patients_language_comes_first() -> None:
    decision = match(
        ABROAD, [reviewer("en", languages=("en",)), reviewer("fr", languages=("fr",), load=2)]
    )
    assert (decision.chosen, decision.rule) == ("fr", Rule.ONLY_CANDIDATE)


def test_nobody_reads_it_so_the_international_path() -> None:
    decision = match(
        ABROAD,
        [
            reviewer("en", languages=("en",)),
            reviewer("onco", languages=("en",), specialties=("oncology",)),
        ],
    )
    assert (decision.chosen, decision.rule) == ("en", Rule.INTERNATIONAL_NO_READER_AVAILABLE)
    excluded = {c.reviewer_id: c.excluded for c in decision.candidates}
    assert excluded == {"en": None, "onco": Exclusion.SPECIALTY}, "every other rule still holds"


def test_a_reader_at_capacity_is_not_available_today() -> None:
    decision = match(
        ABROAD, [reviewer("fr", languages=("fr",), load=3), reviewer("en", languages=("en",))]
    )
    assert (decision.chosen, decision.rule) == ("en", Rule.INTERNATIONAL_NO_READER_AVAILABLE)


def test_nobody_at_all_abroad_either() -> None:
    decision = match(ABROAD, [reviewer("en", languages=("en",), load=3)])
    assert (decision.chosen, decision.rule) == (None, Rule.NOBODY_FITS)
    assert decision.candidates[0].excluded == Exclusion.LANGUAGE


def test_a_coordinator_hands_it_abroad_only_with_the_consent() -> None:
    check_eligible(ABROAD, reviewer("en", languages=("en",)))
    with pytest.raises(Problem) as refused:
        check_eligible(
            replace(ABROAD, international_review=False), reviewer("en", languages=("en",))
        )
    assert refused.value.status == 409


def test_translation_is_needed_only_across_languages() -> None:
    assert needs_translation("fr", ["en"])
    assert not needs_translation("fr", ["en", "fr"])


def test_the_patient_accepts_it_only_by_the_consents_own_scope() -> None:
    assert not accepts_international_review([ConsentScope.REVIEW, ConsentScope.SHARE_WITH_PARTNER])
    assert accepts_international_review([ConsentScope.REVIEW, ConsentScope.INTERNATIONAL_REVIEW])
    assert published_scopes([ConsentScope.REVIEW, ConsentScope.INTERNATIONAL_REVIEW]) == ["review"]
