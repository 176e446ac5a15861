"""The structured opinion: every section required and non-empty; replays recognised."""

import hashlib
import json
from typing import Any

import pytest
from pydantic import ValidationError

from avis.review.models import DeclineBody, Opinion, ReviewerIn, ReviewerPatch
from avis.review.rules import digest_key_id, opinion_digest, sealed_content
from avis.shared.pages import next_cursor


def opinion(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "diagnosis": {"assessment": "clarified", "explanation": "Stage is IIa, not IIb."},
        "imaging_and_lab_review": "MRI consistent with the report.",
        "alternative_pathways": "Active surveillance is reasonable.",
        "risk_benefit": "Surgery risks outweigh benefits at this stage.",
        "further_tests": "PSA every six months.",
        "summary_for_patient": "Your diagnosis is confirmed with a nuance.",
    }
    body.update(changes)
    return body


def errors_of(data: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as info:
        Opinion.model_validate(data)
    return {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}


def test_a_complete_opinion_is_valid() -> None:
    parsed = Opinion.model_validate(opinion())
    assert parsed.diagnosis.assessment == "clarified"


@pytest.mark.parametrize(
    "section",
    [
        "imaging_and_lab_review",
        "alternative_pathways",
        "risk_benefit",
        "further_tests",
        "summary_for_patient",
        "diagnosis",
    ],
)
def test_every_section_is_required(section: str) -> None:
    data = opinion()
    del data[section]
    assert errors_of(data) == {section}


@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
def test_sections_must_not_be_blank(blank: str) -> None:
    assert errors_of(opinion(risk_benefit=blank)) == {"risk_benefit"}
    assert errors_of(opinion(diagnosis={"assessment": "confirmed", "explanation": blank})) == {
        "diagnosis.explanation"
    }


def test_assessment_is_confirmed_clarified_or_revised() -> None:
    for ok in ("confirmed", "clarified", "revised"):
        Opinion.model_validate(opinion(diagnosis={"assessment": ok, "explanation": "why"}))
    assert errors_of(opinion(diagnosis={"assessment": "maybe", "explanation": "why"})) == {
        "diagnosis.assessment"
    }
    assert errors_of(opinion(diagnosis={"assessment": "confirmed"})) == {"diagnosis.explanation"}


def test_unknown_fields_and_broken_text_are_refused() -> None:
    assert errors_of(opinion(patient_name="someone")) == {"patient_name"}
    assert errors_of(opinion(further_tests="bad \ud800 text")) == {"further_tests"}
    assert errors_of(opinion(further_tests="nul \x00 byte")) == {"further_tests"}
    assert errors_of(opinion(further_tests="bell \x07 and C1 \x85")) == {"further_tests"}
    Opinion.model_validate(opinion(further_tests="line one\nline two\ttabbed"))


def test_digest_tells_a_replay_from_another_opinion() -> None:
    key = b"k" * 32

    def digest(o: Opinion) -> str:
        return opinion_digest("k1", key, o)

    first = Opinion.model_validate(opinion())
    again = Opinion.model_validate(opinion())
    other = Opinion.model_validate(opinion(risk_benefit="Surgery is the better option."))
    assert digest(first) == digest(again)
    assert digest(first) != digest(other)
    assert digest(first) != digest(
        Opinion.model_validate(opinion(diagnosis={"assessment": "revised", "explanation": "x"}))
    )


def test_the_digest_is_keyed_and_names_its_key() -> None:
    first = Opinion.model_validate(opinion())
    stored = opinion_digest("k1", b"k" * 32, first)
    assert digest_key_id(stored) == "k1"
    assert stored != opinion_digest("k1", b"j" * 32, first)  # without the key, no match
    plain = hashlib.sha256(json.dumps(first.model_dump(mode="json"), sort_keys=True).encode())
    assert plain.hexdigest() not in stored
    assert digest_key_id(plain.hexdigest()) is None


def test_sealed_content_holds_the_sections_and_the_reviewer_name() -> None:
    content = sealed_content(Opinion.model_validate(opinion()), 2, "Reviewer One", "cardiology")
    assert content.version == 2
    assert content.reviewer_display_name == "Reviewer One"
    assert content.reviewer_specialty == "cardiology"
    assert content.summary_for_patient == opinion()["summary_for_patient"]
    assert content.diagnosis.model_dump(mode="json") == opinion()["diagnosis"]


def test_decline_needs_a_code_and_a_reason() -> None:
    DeclineBody.model_validate({"reason_code": "conflict_of_interest", "reason": "I know them."})
    for bad in (
        {"reason_code": "conflict_of_interest"},
        {"reason_code": "conflict_of_interest", "reason": "  "},
        {"reason": "busy"},
        {"reason_code": "bored", "reason": "busy"},
    ):
        with pytest.raises(ValidationError):
            DeclineBody.model_validate(bad)


def test_reviewer_lists_are_deduplicated_and_patches_refuse_nulls() -> None:
    body = ReviewerIn.model_validate(
        {
            "id": "rev-1",
            "display_name": "Reviewer One",
            "specialties": ["oncology", "oncology"],
            "languages": ["fr"],
            "capacity": 2,
        }
    )
    assert body.specialties == ["oncology"]
    with pytest.raises(ValidationError):
        ReviewerPatch.model_validate({"capacity": None})
    assert ReviewerPatch.model_validate({"institution_code": None}).changes() == {
        "institution_code": None
    }
    assert ReviewerPatch.model_validate({}).changes() == {}


def test_names_are_one_line_of_visible_text() -> None:
    base = {"id": "rev-1", "specialties": ["oncology"], "languages": ["fr"], "capacity": 1}
    ReviewerIn.model_validate({**base, "display_name": "Dr Ada Example"})
    for bad in ("", "  ", "two\nlines", "tab\there"):
        with pytest.raises(ValidationError):
            ReviewerIn.model_validate({**base, "display_name": bad})
    with pytest.raises(ValidationError):
        ReviewerIn.model_validate({**base, "display_name": "x", "active": 0})


def test_the_next_cursor_is_the_last_sort_key_when_more_follow() -> None:
    docs = [{"k": "a"}, {"k": "b"}, {"k": "c"}]
    assert next_cursor(docs, 2, lambda d: d["k"]) == "b"
    assert next_cursor(docs[:2], 2, lambda d: d["k"]) is None
