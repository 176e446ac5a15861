"""The answers to follow-up questions as a report's addendum: composed from the last version in
the patient's language, saying what the version adds, in the JSON and in the printed report."""

import subprocess
from datetime import UTC, datetime

import pytest

from avis.reports.i18n import texts
from avis.reports.models import Report
from avis.reports.pdf import render_pdf
from avis.reports.rules import addendum_due, addendum_section, with_addenda
from avis.shared.events import FollowUpAnswer, Language
from tests.support.samples import sample_report

ANSWERED = datetime(2026, 3, 20, 10, 0, tzinfo=UTC)
ISSUED = datetime(2026, 3, 20, 10, 1, tzinfo=UTC)
ANSWER = FollowUpAnswer(
    question="Puis-je reprendre le vélo avant l'intervention ?",
    answer="Oui, à faible intensité, en évitant les chutes.",
    reviewer_display_name="Dr Claire Martin",
)


def _pdf_text(pdf: bytes) -> str:
    done = subprocess.run(["pdftotext", "-enc", "UTF-8", "-", "-"], input=pdf, capture_output=True)
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.decode("utf-8").split())


def _with_one(language: Language) -> tuple[Report, Report]:
    base = sample_report(language)
    t = texts(language)
    section = addendum_section(t, 1, ANSWER, ANSWERED)
    return base, with_addenda(t, base, [section], version=2, issued_at=ISSUED)


def test_a_version_is_due_for_each_answer_not_yet_issued() -> None:
    assert addendum_due(1, [0])
    assert not addendum_due(1, [0, 1])
    assert addendum_due(2, [0, 1])
    assert not addendum_due(0, [])


@pytest.mark.parametrize(
    ("language", "heading", "note"),
    [
        (Language.FR, "Addendum 1 : une question complémentaire", "complète la version 1"),
        (Language.EN, "Addendum 1: a follow-up question", "adds to version 1"),
    ],
)
def test_the_addendum_version_keeps_the_opinion_and_adds_the_answer(
    language: Language, heading: str, note: str
) -> None:
    base, added = _with_one(language)
    assert added.version == 2
    assert added.opinion_version == base.opinion_version
    assert added.sections == base.sections
    assert added.correction_note and note in added.correction_note
    (addendum,) = added.addenda
    assert addendum.heading == heading and addendum.answer == ANSWER.answer
    assert "Dr Claire Martin" in addendum.signature
    assert base.addenda == []
    issued = [d for d in added.dates if d.at == ISSUED]
    assert len(issued) == 1


def test_the_printed_report_carries_the_addendum() -> None:
    _, added = _with_one(Language.FR)
    text = _pdf_text(render_pdf(added))
    assert "Addendum 1" in text
    assert "Puis-je reprendre le vélo" in text and "à faible intensité" in text
    assert "Réponse de Dr Claire Martin" in text
