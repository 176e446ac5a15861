"""A report whose opinion a second specialist read and agreed with names both, in each
language: the JSON view, the printed PDF and the FHIR document."""

import json
import subprocess
from datetime import UTC, datetime

import pytest

from avis.reports.fhir import document
from avis.reports.i18n import texts
from avis.reports.models import Report
from avis.reports.pdf import render_pdf
from avis.reports.rules import OpinionFacts, compose, report_id_for
from avis.shared.events import Language
from tests.support.samples import (
    CONTACTS,
    REVIEWERS,
    SPECIALTIES,
    case_facts,
    completed_opinion,
    sample_report,
)

SECOND = "Dr Inès Delacroix-Ortega"
NAMED = {
    Language.FR: f"Relu et approuvé par un second spécialiste : {SECOND}",
    Language.EN: f"Read and agreed with by a second specialist: {SECOND}",
}


def _read_twice(language: Language) -> Report:
    case = case_facts(language)
    content = completed_opinion(language).model_copy(update={"second_reader_display_name": SECOND})
    return compose(
        texts=texts(language),
        case=case,
        contact=CONTACTS[language],
        opinion=OpinionFacts(content, SPECIALTIES[language], datetime(2026, 3, 9, tzinfo=UTC)),
        report_id=report_id_for(case.case_id),
        version=1,
        issued_at=datetime(2026, 3, 9, 16, 6, tzinfo=UTC),
    )


@pytest.mark.parametrize("language", list(Language))
def test_the_report_names_both_specialists(language: Language) -> None:
    report = _read_twice(language)
    assert report.reviewer.name == REVIEWERS[language]
    assert report.reviewer.second_reader == SECOND
    assert report.reviewer.second_reader_text == NAMED[language]
    shown = json.loads(report.model_dump_json())
    assert shown["reviewer"]["second_reader"] == SECOND
    printed = " ".join(_pdftotext(render_pdf(report)).split())
    assert REVIEWERS[language] in printed and SECOND in printed
    assert SECOND in json.dumps(document(report), ensure_ascii=False)


@pytest.mark.parametrize("language", list(Language))
def test_a_report_read_once_names_one(language: Language) -> None:
    report = sample_report(language)
    assert report.reviewer.second_reader is None and report.reviewer.second_reader_text is None
    assert NAMED[language] not in " ".join(_pdftotext(render_pdf(report)).split())


def _pdftotext(pdf: bytes) -> str:
    done = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", "-", "-"], input=pdf, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("utf-8")
