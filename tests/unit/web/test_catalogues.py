"""The pages' words: both catalogues hold the same keys, every key a template names is there,
and every value a page turns into a key (statuses, specialties, questions...) has its text."""

import re
from pathlib import Path

import pytest

from avis.shared.events import Language, Question, Specialty, Urgency
from avis.web import pdfpages, rules, texts
from avis.web.models import DocumentKind

TEMPLATES = Path(texts.__file__).parent / "templates"
STATUSES = (
    "draft",
    "submitted",
    "assigned",
    "in_review",
    "awaiting_information",
    "report_ready",
    "withdrawn",
)
# The rules a matching's rationale names (review's `rules.Rule`), said in words on the board.
MATCHING_RULES = (
    "only_candidate",
    "least_load",
    "tie_break_by_id",
    "nobody_fits",
    "coordinator",
    "international_no_reader_available",
)
TIMELINE = (
    "created",
    "submitted",
    "assigned",
    "accepted",
    "declined",
    "review_completed",
    "information_requested",
    "information_provided",
    "review_resumed",
    "second_reading",
    "second_reading_agreed",
    "report_ready",
    "follow_up_asked",
    "follow_up_answered",
    "withdrawn",
)


def used_keys() -> set[str]:
    """Every literal key the templates and the code pass to the catalogue."""
    found: set[str] = set()
    for template in TEMPLATES.glob("*.html"):
        found |= set(
            re.findall(r"""\bt\(\s*["']([a-z_.]*[a-z_])["']\s*[),]""", template.read_text())
        )
    return found


def dynamic_keys() -> set[str]:
    """The keys built from values: a status, a specialty, a question, a step..."""
    built = {f"status.{s}" for s in STATUSES} | {f"timeline.{k}" for k in TIMELINE}
    built |= {f"specialty.{s.value}" for s in Specialty} | {f"question.{q.value}" for q in Question}
    built |= {f"urgency.{u.value}" for u in Urgency} | {f"kind.{k.value}" for k in DocumentKind}
    built |= {f"language.{lang.value}" for lang in Language} | {
        f"new.step.{s}" for s in rules.STEPS
    }
    built |= {f"role.{r}" for r in ("patient", "reviewer", "coordinator", "partner", "service")}
    built |= set(rules.PROBLEM_MESSAGES.values()) | set(rules.STATUS_MESSAGES.values())
    built |= {rules.UNEXPECTED, rules.UNAVAILABLE, "error.csrf", "session.ended"}
    built |= {"case.created", "case.submitted", "case.withdrawn", "upload.done", "upload.none"}
    built |= {"signin.refused", "withdraw.unconfirmed", "error.consent_required"}
    built |= {f"review.pdf.{reason}" for reason in pdfpages.REASONS}
    built |= {f"board.keep.{done}" for done in ("held", "released", "erased", "reason_required")}
    built |= {"board.keep.erased_unconfirmed", "board.keep.released_unconfirmed"}
    built |= {rules.reasoned_refusal(422, None)}
    built |= {f"rule.{r}" for r in MATCHING_RULES}
    return built


def test_both_catalogues_hold_the_same_keys() -> None:
    assert set(texts.keys(Language.FR)) == set(texts.keys(Language.EN))


@pytest.mark.parametrize("language", list(Language))
def test_every_key_the_pages_use_has_its_text(language: Language) -> None:
    catalogue = texts.keys(language)
    missing = sorted(k for k in used_keys() | dynamic_keys() if not catalogue.get(k))
    assert not missing, f"{language.value}: no text for {missing}"
    assert len(used_keys()) > 50


def test_the_placeholders_agree_between_the_languages() -> None:
    fr, en = texts.keys(Language.FR), texts.keys(Language.EN)
    for key, text in en.items():
        assert set(re.findall(r"%\((\w+)\)s", text)) == set(re.findall(r"%\((\w+)\)s", fr[key])), (
            key
        )
