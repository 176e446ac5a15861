"""International review: a report of a translated opinion says, in the patient's language and
then in the specialist's, that it was translated, by whom and from which language: the JSON view,
the printed PDF and the FHIR document."""

import json
import subprocess
from datetime import UTC, datetime

from avis.reports.fhir import document
from avis.reports.i18n import texts
from avis.reports.models import Report
from avis.reports.pdf import render_pdf
from avis.reports.rules import OpinionFacts, compose, report_id_for
from avis.shared.events import Language
from tests.support.samples import CONTACTS, SPECIALTIES, case_facts, completed_opinion

TRANSLATOR = "Camille Martin-Laurent"


def _translated(source: bool = True) -> Report:
    case = case_facts(Language.FR)
    content = completed_opinion(Language.FR).model_copy(
        update={"translator_display_name": TRANSLATOR, "translated_from": Language.EN}
    )
    return compose(
        texts=texts(Language.FR),
        case=case,
        contact=CONTACTS[Language.FR],
        opinion=OpinionFacts(content, SPECIALTIES[Language.FR], datetime(2026, 3, 9, tzinfo=UTC)),
        report_id=report_id_for(case.case_id),
        version=1,
        issued_at=datetime(2026, 3, 9, 16, 6, tzinfo=UTC),
        source_texts=texts(Language.EN) if source else None,
    )


def test_the_report_states_its_translation_in_both_languages() -> None:
    report = _translated()
    french, english = report.reviewer.translation_text
    assert report.reviewer.translated_by == TRANSLATOR
    assert "traduction" in french and "en anglais" in french and TRANSLATOR in french
    assert "translation" in english and "in English" in english and TRANSLATOR in english
    shown = json.loads(report.model_dump_json())
    assert shown["reviewer"]["translation_text"] == [french, english]
    printed = " ".join(_pdftotext(render_pdf(report)).split())
    assert " ".join(french.split()) in printed and " ".join(english.split()) in printed
    fhir = json.dumps(document(report), ensure_ascii=False)
    assert french in fhir and english in fhir


def test_without_the_specialists_language_it_states_it_in_the_patients() -> None:
    (french,) = _translated(source=False).reviewer.translation_text
    assert TRANSLATOR in french


def test_a_report_not_translated_says_nothing_of_it() -> None:
    report = compose(
        texts=texts(Language.EN),
        case=case_facts(Language.EN),
        contact=CONTACTS[Language.EN],
        opinion=OpinionFacts(
            completed_opinion(Language.EN),
            SPECIALTIES[Language.EN],
            datetime(2026, 3, 9, tzinfo=UTC),
        ),
        report_id="r-1",
        version=1,
        issued_at=datetime(2026, 3, 9, 16, 6, tzinfo=UTC),
    )
    assert report.reviewer.translation_text == [] and report.reviewer.translated_by is None


def _pdftotext(pdf: bytes) -> str:
    done = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", "-", "-"], input=pdf, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("utf-8")
