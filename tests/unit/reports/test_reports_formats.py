"""The report's PDF and FHIR renderings, from composed sample reports."""

import copy
import subprocess

import pytest

from avis.reports.fhir import document
from avis.reports.pdf import printable, render_pdf
from avis.shared.events import Language
from tests.support.fhir import violations
from tests.support.samples import sample_report


def pdftotext(pdf: bytes) -> str:
    """The text of a PDF, laid out (poppler-utils, installed by `make install`)."""
    done = subprocess.run(
        ["pdftotext", "-layout", "-enc", "UTF-8", "-", "-"], input=pdf, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("utf-8")


# --- FHIR ------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", list(Language))
@pytest.mark.parametrize("version", [1, 2])
def test_the_fhir_document_keeps_the_document_rules(language: Language, version: int) -> None:
    report = sample_report(language, version)
    bundle = document(report)
    assert violations(bundle) == []
    composition = bundle["entry"][0]["resource"]
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Composition", "Patient", "Practitioner", "PractitionerRole"]
    titles = [s["title"] for s in composition["section"]]
    # One section per part of the report: the questions, the five parts, the summary, the
    # specialist and the disclaimer.
    assert len(titles) == 1 + 5 + 1 + 2
    assert titles[0] == report.labels.questions
    assert [t.split(". ", 1)[-1] for t in titles[1:7]] == [s.heading for s in report.sections]
    assert composition["language"] == language.value
    patient = bundle["entry"][1]["resource"]
    assert patient["birthDate"] == report.patient.birth_date.isoformat()
    assert patient["name"][0]["family"] == report.patient.family_name
    if version > 1:
        assert composition["status"] == "amended"
        assert composition["relatesTo"][0]["targetIdentifier"]["value"].endswith(":v1")
    assert document(report) == bundle, "the same version gives the same document"


def test_the_document_rules_check_finds_what_is_wrong() -> None:
    good = document(sample_report(Language.FR))
    dangling = copy.deepcopy(good)
    dangling["entry"][0]["resource"]["subject"]["reference"] = "urn:uuid:0000"
    assert any("does not resolve" in v for v in violations(dangling))
    reordered = copy.deepcopy(good)
    reordered["entry"].reverse()
    assert any("bdl-11" in v for v in violations(reordered))
    undated = copy.deepcopy(good)
    del undated["timestamp"]
    assert any("bdl-10" in v for v in violations(undated))
    anonymous = copy.deepcopy(good)
    del anonymous["identifier"]
    assert any("bdl-9" in v for v in violations(anonymous))
    wrong = copy.deepcopy(good)
    wrong["entry"][1]["resource"]["birthDate"] = "14/03/1971"
    assert any("structure" in v for v in violations(wrong))


def test_narratives_escape_what_the_opinion_says() -> None:
    report = sample_report(Language.EN)
    tricky = report.model_copy(
        update={
            "sections": [
                report.sections[0].model_copy(update={"text": "PSA < 4 & rising <script>"}),
                *report.sections[1:],
            ]
        }
    )
    bundle = document(tricky)
    assert violations(bundle) == []
    div = bundle["entry"][0]["resource"]["section"][1]["text"]["div"]
    assert "PSA &lt; 4 &amp; rising &lt;script&gt;" in div


# --- PDF -------------------------------------------------------------------------------------


def test_the_french_pdf_reads_in_french_with_its_reference_and_numbers_on_every_page() -> None:
    report = sample_report(Language.FR)
    pdf = render_pdf(report)
    assert pdf.startswith(b"%PDF-")
    text = pdftotext(pdf)
    pages = [p for p in text.split("\f") if p.strip()]
    assert len(pages) >= 2
    for number, page in enumerate(pages, start=1):
        assert "AV-2026-000123" in page
        assert f"Page {number} sur {len(pages)}" in page
    flat = " ".join(text.split())
    for heading in [s.heading for s in report.sections] + [report.disclaimer.heading]:
        assert heading in flat
    assert "Éloïse Dupré-Nuñez" in flat and "14 mars 1971" in flat
    assert "Oncologie" in flat and "Dr Claire Fontaine" in flat


def test_the_same_report_renders_the_same_bytes() -> None:
    report = sample_report(Language.EN)
    assert render_pdf(report) == render_pdf(report)
    assert render_pdf(report) != render_pdf(sample_report(Language.EN, 2))


def test_the_layout_runs_on_reportlabs_c_accelerators() -> None:
    from reportlab.lib import rl_accel

    # Without the rl_accel package ReportLab falls back to its pure-Python versions, quietly.
    assert type(rl_accel.fp_str).__name__ == "builtin_function_or_method"
    assert type(rl_accel.asciiBase85Encode).__name__ == "builtin_function_or_method"


def test_a_character_the_font_lacks_prints_unaccented_rather_than_as_a_box() -> None:
    assert printable("Ștefan Țurcan") == "Stefan Turcan"
    assert printable("Éloïse «ok» – €") == "Éloïse «ok» – €"
    report = sample_report(Language.EN)
    named = report.model_copy(
        update={"patient": report.patient.model_copy(update={"name": "Ștefan Țurcan"})}
    )
    assert "Stefan Turcan" in pdftotext(render_pdf(named))


@pytest.mark.parametrize("language", [Language.FR, Language.EN])
def test_the_printed_report_leads_with_its_summary_in_plain_words(language: Language) -> None:
    report = sample_report(language)
    text = " ".join(pdftotext(render_pdf(report)).split())
    summary = report.sections[-1]
    assert summary.lead is not None
    first = " ".join(summary.text.split())[:40]
    at = text.index(summary.heading)
    assert at < text.index(report.labels.questions), "before the questions"
    assert at < text.index(report.sections[0].heading), "before the opinion's parts"
    assert at < text.index(summary.lead) < text.index(first)
