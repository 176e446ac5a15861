"""The report as an HL7 FHIR **R4B** `document` Bundle, validated with `fhir.resources` (8.x).

`fhir.resources` 8 validates R4B and R5 (R4 proper exists only in its 6.x line, on pydantic 1);
R4B is R4's content with fixes, and what R4 readers take. The Bundle holds, in order: the
Composition (one section per part of the report, each addendum's answer to a follow-up question
after the opinion), the Patient it is about, the Practitioner who wrote the opinion and their
PractitionerRole (the specialty); every reference is a `urn:uuid` full URL of an entry of the
same Bundle. Ids derive from the report version, so the same
version always gives the same document.
"""

import uuid
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from fhir.resources.R4B.bundle import Bundle

from avis.reports.models import Report
from avis.reports.rules import version_key

FHIR_VERSION = "4.3.0"  # R4B
SYSTEM = "https://avis.health/fhir"
DOCUMENT_SYSTEM = f"{SYSTEM}/report-versions"
SECTION_SYSTEM = f"{SYSTEM}/report-sections"
SPECIALTY_SYSTEM = f"{SYSTEM}/specialties"
LOINC = "http://loinc.org"
CONSULT_NOTE = "11488-4"  # LOINC: Consult note
_NAMESPACE = uuid.UUID("0e6f0f9e-1c55-4c1e-9a0b-5a3f4f0f7c21")


def _urn(key: str, what: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{key}/{what}')}"


def _div(*paragraphs: str) -> str:
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs if p.strip())
    return f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'


def _narrative(*paragraphs: str) -> dict[str, str]:
    return {"status": "generated", "div": _div(*paragraphs)}


def _section(code: str, title: str, *paragraphs: str) -> dict[str, Any]:
    return {
        "title": title,
        "code": {"coding": [{"system": SECTION_SYSTEM, "code": code}], "text": title},
        "text": _narrative(*paragraphs),
    }


@dataclass(frozen=True)
class _Urls:
    """The full URLs of a document's entries, derived from the report version's key."""

    composition: str
    patient: str
    practitioner: str
    role: str

    @classmethod
    def of(cls, key: str) -> "_Urls":
        return cls(
            _urn(key, "Composition"),
            _urn(key, "Patient"),
            _urn(key, "Practitioner"),
            _urn(key, "PractitionerRole"),
        )


def _id(url: str) -> str:
    return url.removeprefix("urn:uuid:")


def document(report: Report) -> dict[str, Any]:
    """The report as a FHIR R4B document Bundle (JSON), validated."""
    key = version_key(report.report_id, report.version)
    urls = _Urls.of(key)
    resources: list[tuple[str, dict[str, Any]]] = [
        (urls.composition, _composition(report, key, urls)),
        (urls.patient, _patient(report, urls)),
        (urls.practitioner, _practitioner(report, urls)),
        (urls.role, _role(report, urls)),
    ]
    bundle = {
        "resourceType": "Bundle",
        "language": report.language.value,
        "identifier": {"system": DOCUMENT_SYSTEM, "value": key},
        "type": "document",
        "timestamp": report.issued_at.isoformat(),
        "entry": [{"fullUrl": url, "resource": resource} for url, resource in resources],
    }
    validated = Bundle.model_validate(bundle)
    return dict(validated.model_dump(mode="json", exclude_none=True))


def _composition(report: Report, key: str, urls: _Urls) -> dict[str, Any]:
    """The Composition: what the document is, whom it is about, who wrote it, its sections."""
    facts = [f"{line.label} {line.text}" for line in report.dates]
    composition: dict[str, Any] = {
        "resourceType": "Composition",
        "id": _id(urls.composition),
        "language": report.language.value,
        "text": _narrative(report.title, f"{report.labels.reference} {report.reference}", *facts),
        "identifier": {"system": DOCUMENT_SYSTEM, "value": key},
        "status": "amended" if report.version > 1 else "final",
        "type": {
            "coding": [{"system": LOINC, "code": CONSULT_NOTE, "display": "Consult note"}],
            "text": report.title,
        },
        "subject": {"reference": urls.patient, "display": report.patient.name},
        "date": report.issued_at.isoformat(),
        "author": [{"reference": urls.role, "display": report.reviewer.name}],
        "title": f"{report.title} \u2013 {report.reference}",
        "confidentiality": "R",
        "section": _sections(report),
    }
    if report.version > 1:
        previous = version_key(report.report_id, report.version - 1)
        composition["relatesTo"] = [
            {
                "code": "replaces",
                "targetIdentifier": {"system": DOCUMENT_SYSTEM, "value": previous},
            }
        ]
    return composition


def _sections(report: Report) -> list[dict[str, Any]]:
    """One Composition section per part of the report, in the report's order."""
    sections = []
    if report.questions:
        sections.append(
            _section(
                "questions",
                report.labels.questions,
                report.labels.questions_intro,
                *(f"{q.text} {q.answered_in_text}" for q in report.questions),
            )
        )
    for part in report.sections:
        title = f"{part.number}. {part.heading}" if part.number else part.heading
        sections.append(
            _section(part.code.value, title, *filter(None, [part.lead]), *part.text.split("\n"))
        )
    for addendum in report.addenda:  # the answers to follow-up questions, after the opinion
        sections.append(
            _section(
                f"addendum-{addendum.number}",
                addendum.heading,
                f"{addendum.question_label} {addendum.question}",
                f"{addendum.answer_label} {addendum.answer}",
                addendum.signature,
            )
        )
    sections.append(
        _section(
            "reviewer",
            report.reviewer.heading,
            f"{report.reviewer.name}, {report.reviewer.specialty_text}",
            *filter(None, [report.reviewer.second_reader_text]),
            *report.reviewer.translation_text,
        )
    )
    sections.append(_section("disclaimer", report.disclaimer.heading, report.disclaimer.text))
    return sections


def _patient(report: Report, urls: _Urls) -> dict[str, Any]:
    """The Patient the report is about."""
    patient = report.patient
    communication = [{"language": {"coding": [{"code": report.language.value}]}, "preferred": True}]
    if patient.birth_date is None or patient.family_name is None or patient.given_name is None:
        # A reviewer's report: the case's reference as the name, nothing that identifies.
        return {
            "resourceType": "Patient",
            "id": _id(urls.patient),
            "name": [{"use": "anonymous", "text": patient.name}],
            "communication": communication,
        }
    return {
        "resourceType": "Patient",
        "id": _id(urls.patient),
        "name": [
            {
                "use": "official",
                "text": patient.name,
                "family": patient.family_name,
                "given": [patient.given_name],
            }
        ],
        "birthDate": patient.birth_date.isoformat(),
        "communication": communication,
    }


def _practitioner(report: Report, urls: _Urls) -> dict[str, Any]:
    """The Practitioner who wrote the opinion."""
    return {
        "resourceType": "Practitioner",
        "id": _id(urls.practitioner),
        "name": [{"text": report.reviewer.name}],
    }


def _role(report: Report, urls: _Urls) -> dict[str, Any]:
    """The PractitionerRole the Composition names as author: the practitioner's specialty."""
    return {
        "resourceType": "PractitionerRole",
        "id": _id(urls.role),
        "practitioner": {"reference": urls.practitioner, "display": report.reviewer.name},
        "specialty": [
            {
                "coding": [{"system": SPECIALTY_SYSTEM, "code": report.reviewer.specialty.value}],
                "text": report.reviewer.specialty_text,
            }
        ],
    }
