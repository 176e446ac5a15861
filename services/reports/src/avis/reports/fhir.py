"""The report as an HL7 FHIR **R4B** `document` Bundle, validated with `fhir.resources` (8.x).

`fhir.resources` 8 validates R4B and R5 (R4 proper exists only in its 6.x line, on pydantic 1);
R4B is R4's content with fixes, and what R4 readers take. The Bundle holds, in order: the
Composition (one section per part of the report), the Patient it is about, the Practitioner who
wrote the opinion and their PractitionerRole (the specialty); every reference is a `urn:uuid`
full URL of an entry of the same Bundle. Ids derive from the report version, so the same
version always gives the same document.
"""

import uuid
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


def document(report: Report) -> dict[str, Any]:
    """The report as a FHIR R4B document Bundle (JSON), validated."""
    key = version_key(report.report_id, report.version)
    composition_url = _urn(key, "Composition")
    patient_url = _urn(key, "Patient")
    practitioner_url = _urn(key, "Practitioner")
    role_url = _urn(key, "PractitionerRole")
    issued = report.issued_at.isoformat()
    facts = [f"{line.label} {line.text}" for line in report.dates]
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
    sections.append(
        _section(
            "reviewer",
            report.reviewer.heading,
            f"{report.reviewer.name}, {report.reviewer.specialty_text}",
        )
    )
    sections.append(_section("disclaimer", report.disclaimer.heading, report.disclaimer.text))
    composition: dict[str, Any] = {
        "resourceType": "Composition",
        "id": composition_url.removeprefix("urn:uuid:"),
        "language": report.language.value,
        "text": _narrative(report.title, f"{report.labels.reference} {report.reference}", *facts),
        "identifier": {"system": DOCUMENT_SYSTEM, "value": key},
        "status": "amended" if report.version > 1 else "final",
        "type": {
            "coding": [{"system": LOINC, "code": CONSULT_NOTE, "display": "Consult note"}],
            "text": report.title,
        },
        "subject": {"reference": patient_url, "display": report.patient.name},
        "date": issued,
        "author": [{"reference": role_url, "display": report.reviewer.name}],
        "title": f"{report.title} \u2013 {report.reference}",
        "confidentiality": "R",
        "section": sections,
    }
    if report.version > 1:
        previous = version_key(report.report_id, report.version - 1)
        composition["relatesTo"] = [
            {
                "code": "replaces",
                "targetIdentifier": {"system": DOCUMENT_SYSTEM, "value": previous},
            }
        ]
    resources: list[tuple[str, dict[str, Any]]] = [
        (composition_url, composition),
        (
            patient_url,
            {
                "resourceType": "Patient",
                "id": patient_url.removeprefix("urn:uuid:"),
                "name": [
                    {
                        "use": "official",
                        "text": report.patient.name,
                        "family": report.patient.family_name,
                        "given": [report.patient.given_name],
                    }
                ],
                "birthDate": report.patient.birth_date.isoformat(),
                "communication": [
                    {"language": {"coding": [{"code": report.language.value}]}, "preferred": True}
                ],
            },
        ),
        (
            practitioner_url,
            {
                "resourceType": "Practitioner",
                "id": practitioner_url.removeprefix("urn:uuid:"),
                "name": [{"text": report.reviewer.name}],
            },
        ),
        (
            role_url,
            {
                "resourceType": "PractitionerRole",
                "id": role_url.removeprefix("urn:uuid:"),
                "practitioner": {"reference": practitioner_url, "display": report.reviewer.name},
                "specialty": [
                    {
                        "coding": [
                            {"system": SPECIALTY_SYSTEM, "code": report.reviewer.specialty.value}
                        ],
                        "text": report.reviewer.specialty_text,
                    }
                ],
            },
        ),
    ]
    bundle = {
        "resourceType": "Bundle",
        "language": report.language.value,
        "identifier": {"system": DOCUMENT_SYSTEM, "value": key},
        "type": "document",
        "timestamp": issued,
        "entry": [{"fullUrl": url, "resource": resource} for url, resource in resources],
    }
    validated = Bundle.model_validate(bundle)
    return dict(validated.model_dump(mode="json", exclude_none=True))
