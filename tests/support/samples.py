"""Sample bodies: what a patient or partner sends intake (a draft, a consent, records), the
opinion a reviewer writes, and the reports tests' (and the PDF benchmark's and the docs'
pictures') cases and opinions, one French and one English patient, each with a complete
structured opinion."""

import zlib
from datetime import UTC, date, datetime
from typing import Any

from avis.reports.i18n import texts
from avis.reports.models import Report
from avis.reports.rules import CaseFacts, OpinionFacts, compose, report_id_for
from avis.shared.events import (
    CompletedOpinion,
    Language,
    PatientContact,
    Question,
    Specialty,
)
from tests.support.basics import unique

CASE_IDS = {
    Language.FR: "3f1c2a9e-8b7d-4e21-9a5c-0d6e4f1b2c3d",
    Language.EN: "7a2b4c6d-1e3f-4a5b-8c7d-9e0f1a2b3c4d",
}
CONTACTS = {
    Language.FR: PatientContact(
        given_name="Éloïse",
        family_name="Dupré-Nuñez",
        email="eloise@example.org",
        birth_date=date(1971, 3, 14),
        preferred_language=Language.FR,
    ),
    Language.EN: PatientContact(
        given_name="Margaret",
        family_name="O’Connell",
        email="margaret@example.org",
        birth_date=date(1958, 11, 2),
        preferred_language=Language.EN,
    ),
}
OPINIONS = {
    Language.FR: {
        "diagnosis": {
            "assessment": "clarified",
            "explanation": (
                "Le nodule de 14 mm du lobe supérieur droit présente les caractéristiques d’un "
                "adénocarcinome pulmonaire de stade précoce (cT1b N0 M0). La biopsie confirme "
                "la nature du nodule ; le stade, lui, mérite d’être précisé par un TEP-scanner.\n\n"
                "Rien dans le dossier ne suggère une atteinte ganglionnaire à ce jour."
            ),
        },
        "imaging_and_lab_review": (
            "Le scanner thoracique de mars et l’IRM cérébrale sont de bonne qualité et "
            "concordants. Les analyses sanguines (NFS, bilan hépatique et rénal) sont normales."
        ),
        "alternative_pathways": (
            "Si la chirurgie n’est pas souhaitée ou pas possible, la radiothérapie "
            "stéréotaxique offre un contrôle local comparable pour une tumeur de cette taille."
        ),
        "risk_benefit": (
            "La lobectomie par vidéo-thoracoscopie offre les meilleures chances de guérison, "
            "pour un risque opératoire faible compte tenu de votre âge et de votre souffle."
        ),
        "further_tests": (
            "Un TEP-scanner avant l’intervention, et des épreuves fonctionnelles respiratoires "
            "complètes."
        ),
        "summary_for_patient": (
            "Le diagnostic est précisé : il s’agit d’une tumeur du poumon découverte tôt. "
            "L’opération proposée est le bon choix ; un examen complémentaire est conseillé "
            "avant de la programmer."
        ),
    },
    Language.EN: {
        "diagnosis": {
            "assessment": "confirmed",
            "explanation": (
                "The echocardiogram and the MRI show a moderate narrowing of the aortic valve "
                "(aortic stenosis), with a valve area of 1.2 cm² and a preserved pumping "
                "function. The diagnosis you were given is right."
            ),
        },
        "imaging_and_lab_review": (
            "The echocardiogram of January is of good quality. Blood tests, including "
            "NT-proBNP, are within the expected range for moderate stenosis."
        ),
        "alternative_pathways": (
            "Close monitoring, with an echocardiogram every six to twelve months, is a sound "
            "alternative to early valve replacement while you have no symptoms."
        ),
        "risk_benefit": (
            "Replacing the valve now would expose you to the risks of surgery without a clear "
            "gain, since the narrowing is moderate and you have no symptoms."
        ),
        "further_tests": "An exercise test, to make sure the narrowing causes no hidden symptoms.",
        "summary_for_patient": (
            "Your diagnosis is confirmed. Watchful monitoring is reasonable for now; an "
            "exercise test would make the decision safer."
        ),
    },
}
REVIEWERS = {Language.FR: "Dr Claire Fontaine", Language.EN: "Dr James Whitfield"}
SPECIALTIES = {Language.FR: Specialty.ONCOLOGY, Language.EN: Specialty.CARDIOLOGY}


def case_facts(language: Language, questions: tuple[Question, ...] | None = None) -> CaseFacts:
    """The sample case of `language`."""
    return CaseFacts(
        case_id=CASE_IDS[language],
        reference="AV-2026-000123" if language is Language.FR else "AV-2026-000456",
        specialty=SPECIALTIES[language],
        language=language,
        questions=questions or tuple(Question),
        submitted_at=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
    )


def completed_opinion(language: Language, version: int = 1) -> CompletedOpinion:
    """The sample opinion of `language`, as review seals it."""
    return CompletedOpinion.model_validate(
        {
            **OPINIONS[language],
            "version": version,
            "reviewer_display_name": REVIEWERS[language],
            "reviewer_specialty": SPECIALTIES[language].value,
        }
    )


def sample_report(language: Language, version: int = 1) -> Report:
    """The sample report of `language`, composed."""
    case = case_facts(language)
    return compose(
        texts=texts(language),
        case=case,
        contact=CONTACTS[language],
        opinion=OpinionFacts(
            completed_opinion(language, version),
            SPECIALTIES[language],
            datetime(2026, 3, 9, 16, 5, tzinfo=UTC),
        ),
        report_id=report_id_for(case.case_id),
        version=version,
        issued_at=datetime(2026, 3, 9, 16, 6, tzinfo=UTC),
    )


def write_pictures(directory: str) -> None:
    """Write page 1 of the French and English sample reports as small PNGs (the docs' pictures):
    `python -m tests.support.samples docs`."""
    import pathlib
    import subprocess
    import tempfile

    from avis.reports.pdf import render_pdf

    for language in Language:
        with tempfile.TemporaryDirectory() as scratch:
            source = pathlib.Path(scratch) / "report.pdf"
            source.write_bytes(render_pdf(sample_report(language)))
            target = pathlib.Path(directory) / f"report-{language.value}-page1"
            page_1 = ["-f", "1", "-l", "1", "-singlefile"]
            subprocess.run(
                ["pdftoppm", "-png", "-r", "60", *page_1, str(source), str(target)], check=True
            )
            print(f"{target}.png")


# --- what patients and partners send intake ------------------------------------------------


def case_body(**overrides: Any) -> dict[str, Any]:
    """A valid draft."""
    body: dict[str, Any] = {
        "patient": {
            "given_name": "Camille",
            "family_name": "Martin",
            "birth_date": "1971-03-14",
            "email": "camille.martin@example.org",
            "phone": "+33 6 12 34 56 78",
            "preferred_language": "fr",
        },
        "physician": {"name": "Dr Bernard", "institution_code": "750712184"},
        "specialty": "oncology",
        "urgency": "routine",
        "questions": ["diagnosis_clarification", "treatment_alternatives"],
        "clinical_summary": "Nodule found on a scan in March; biopsy planned.",
    }
    body.update(overrides)
    return body


def consent_body(*scopes: str, accepted_at: datetime | None = None) -> dict[str, Any]:
    """A submission with consent to `scopes` (the review by default)."""
    return {
        "consent": {
            "text_version": "consent-2026-01",
            "accepted_at": (accepted_at or datetime.now(UTC)).isoformat(),
            "scopes": list(scopes or ("review",)),
        }
    }


def pdf(tag: str = "") -> bytes:
    """A small PDF, distinct per `tag`."""
    return (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n"
        + f"% {tag or unique('pdf')}\n".encode()
        + b"trailer << /Root 1 0 R >>\n%%EOF\n"
    )


def png(tag: str = "") -> bytes:
    """A 1x1 PNG, distinct per `tag` (a text chunk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    text = b"Comment\x00" + (tag or unique("png")).encode()
    idat = zlib.compress(b"\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"tEXt", text)
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def upload(
    data: bytes, kind: str = "test_result", filename: str = "record.pdf", content_type: str = ""
) -> dict[str, Any]:
    """httpx keyword arguments for a multipart upload."""
    part: tuple[Any, ...] = (filename, data, content_type) if content_type else (filename, data)
    return {"files": {"file": part}, "data": {"kind": kind}}


def birth(years_ago: int) -> str:
    """A birth date `years_ago` years ago (ISO)."""
    today = date.today()
    return today.replace(year=today.year - years_ago, day=min(today.day, 28)).isoformat()


# --- what a reviewer answers (review's opinion body) ---------------------------------------

OPINION = {
    "diagnosis": {"assessment": "confirmed", "explanation": "The nodule's features fit."},
    "imaging_and_lab_review": "CT and biopsy report agree.",
    "alternative_pathways": "Stereotactic radiotherapy if surgery is declined.",
    "risk_benefit": "Resection offers the best control for an acceptable risk.",
    "further_tests": "PET-CT before surgery.",
    "summary_for_patient": "The diagnosis is confirmed and the plan is sound.",
}


if __name__ == "__main__":
    import sys

    write_pictures(sys.argv[1] if len(sys.argv) > 1 else "docs")
