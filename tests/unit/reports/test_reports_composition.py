"""Composition of the report in each language, from the catalogues a translator edits."""

from datetime import UTC, datetime

import pytest
from babel.messages.pofile import read_po

from avis.reports.i18n import LOCALES, MissingText, read_catalogue, texts
from avis.reports.models import SectionCode
from avis.reports.rules import ANSWERED_IN, OPINION_SECTIONS, OpinionFacts, compose, report_id_for
from avis.shared.events import Assessment, Language, Question
from tests.support.samples import (
    CONTACTS,
    OPINIONS,
    REVIEWERS,
    case_facts,
    completed_opinion,
    sample_report,
)

FRENCH_HEADINGS = {
    SectionCode.DIAGNOSIS: "Le diagnostic",
    SectionCode.IMAGING_AND_LAB_REVIEW: "Imagerie et résultats d’analyses",
    SectionCode.ALTERNATIVE_PATHWAYS: "Les autres options de prise en charge",
    SectionCode.RISK_BENEFIT: "Bénéfices et risques du traitement proposé",
    SectionCode.FURTHER_TESTS: "Examens complémentaires conseillés",
    SectionCode.SUMMARY: "En résumé",
}
ENGLISH_HEADINGS = {
    SectionCode.DIAGNOSIS: "The diagnosis",
    SectionCode.IMAGING_AND_LAB_REVIEW: "Imaging and test results",
    SectionCode.ALTERNATIVE_PATHWAYS: "Other treatment options",
    SectionCode.RISK_BENEFIT: "Benefits and risks of the proposed treatment",
    SectionCode.FURTHER_TESTS: "Recommended further tests",
    SectionCode.SUMMARY: "In short",
}


def _ids(language: Language) -> dict[str, str]:
    return {str(m.id): str(m.string) for m in read_catalogue(language) if m.id}


def test_both_catalogues_translate_the_same_keys_completely() -> None:
    fr, en = _ids(Language.FR), _ids(Language.EN)
    assert set(fr) == set(en), set(fr) ^ set(en)
    assert len(fr) >= 40
    for language, catalogue in ((Language.FR, fr), (Language.EN, en)):
        empty = [k for k, v in catalogue.items() if not v.strip()]
        assert not empty, f"{language}: untranslated {empty}"
        fuzzy = [m.id for m in read_catalogue(language) if m.id and m.fuzzy]
        assert not fuzzy, f"{language}: fuzzy {fuzzy}"
    # Each language is written for itself, not copied: only the date pattern is shared.
    assert {k for k in fr if fr[k] == en[k]} == {"format.date"}


def test_the_catalogues_live_as_po_files_beside_the_code() -> None:
    for language in Language:
        path = LOCALES / language.value / "LC_MESSAGES" / "reports.po"
        with path.open("rb") as source:
            assert str(read_po(source).locale) == language.value


@pytest.mark.parametrize("language", list(Language))
@pytest.mark.parametrize("assessment", list(Assessment))
def test_every_assessment_reads_as_a_sentence(language: Language, assessment: Assessment) -> None:
    opinion = completed_opinion(language)
    changed = opinion.model_copy(
        update={"diagnosis": opinion.diagnosis.model_copy(update={"assessment": assessment})}
    )
    case = case_facts(language)
    report = compose(
        texts=texts(language),
        case=case,
        contact=CONTACTS[language],
        opinion=OpinionFacts(changed, case.specialty, case.submitted_at),
        report_id=report_id_for(case.case_id),
        version=1,
        issued_at=datetime(2026, 3, 10, tzinfo=UTC),
    )
    lead = report.sections[0].lead
    assert lead is not None and lead.endswith(".") and assessment.value not in lead
    assert report.sections[0].assessment is assessment


def test_a_missing_key_is_an_error_never_shown_as_is() -> None:
    with pytest.raises(MissingText):
        texts(Language.FR)("heading.nothing")


def test_french_report_is_complete_and_french() -> None:
    report = sample_report(Language.FR)
    assert report.language is Language.FR
    assert report.title == "Rapport de deuxième avis médical"
    assert report.patient.name == "Éloïse Dupré-Nuñez"
    assert report.patient.birth_date_text == "14 mars 1971"
    assert [d.text for d in report.dates] == ["2 mars 2026", "9 mars 2026", "9 mars 2026"]
    assert [d.label for d in report.dates] == [
        "Demande envoyée le",
        "Avis rendu le",
        "Rapport établi le",
    ]
    assert {s.code: s.heading for s in report.sections} == FRENCH_HEADINGS
    assert [s.number for s in report.sections] == [1, 2, 3, 4, 5, None]
    diagnosis = report.sections[0]
    assert diagnosis.assessment is Assessment.CLARIFIED
    assert diagnosis.lead == "Le spécialiste précise le diagnostic qui vous a été donné."
    assert diagnosis.text == OPINIONS[Language.FR]["diagnosis"]["explanation"]
    summary = report.sections[-1]
    assert summary.text == OPINIONS[Language.FR]["summary_for_patient"]
    assert summary.lead == diagnosis.lead, "in plain words, from the opinion's own fields"
    assert report.specialty_text == "Oncologie"
    assert report.reviewer.name == REVIEWERS[Language.FR]
    assert report.reviewer.specialty_text == "Oncologie"
    assert report.disclaimer.heading == "Avertissement médical"
    assert "ne remplace pas votre médecin traitant" in report.disclaimer.text
    assert report.correction_note is None
    assert report.labels.page % {"page": 1, "pages": 2} == "Page 1 sur 2"


def test_english_report_is_complete_and_english() -> None:
    report = sample_report(Language.EN)
    assert report.title == "Second medical opinion report"
    assert report.patient.birth_date_text == "2 November 1958"
    assert {s.code: s.heading for s in report.sections} == ENGLISH_HEADINGS
    assert report.sections[0].lead == "The specialist confirms the diagnosis you were given."
    assert report.reviewer.specialty_text == "Cardiology"
    assert "does not replace your treating physician" in report.disclaimer.text
    assert report.labels.page % {"page": 2, "pages": 3} == "Page 2 of 3"


@pytest.mark.parametrize("language", list(Language))
def test_each_question_says_where_it_is_answered(language: Language) -> None:
    report = sample_report(language)
    by_code = {s.code: s for s in report.sections}
    assert [q.code for q in report.questions] == list(Question)
    for line in report.questions:
        target = by_code[ANSWERED_IN[line.code]]
        assert line.answered_in is target.code
        assert str(target.number) in line.answered_in_text
        assert target.heading in line.answered_in_text
    word = {"fr": "Réponse en partie", "en": "Answered in part"}[language.value]
    assert all(line.answered_in_text.startswith(word) for line in report.questions)


def test_the_questions_listed_are_the_patients_own_in_their_order() -> None:
    asked = (Question.FURTHER_TESTS, Question.DIAGNOSIS_CLARIFICATION)
    case = case_facts(Language.EN, asked)
    report = compose(
        texts=texts(Language.EN),
        case=case,
        contact=CONTACTS[Language.EN],
        opinion=OpinionFacts(completed_opinion(Language.EN), case.specialty, case.submitted_at),
        report_id=report_id_for(case.case_id),
        version=1,
        issued_at=datetime(2026, 3, 10, tzinfo=UTC),
    )
    assert [q.code for q in report.questions] == list(asked)
    assert [s.code for s in report.sections][:5] == list(OPINION_SECTIONS)


def test_a_correction_is_a_new_version_that_says_what_it_replaces() -> None:
    second = sample_report(Language.FR, version=2)
    assert second.version == 2 and second.opinion_version == 2
    assert second.correction_note is not None and "version 1" in second.correction_note
    english = sample_report(Language.EN, version=3)
    assert english.correction_note is not None and "replaces version 2" in english.correction_note
