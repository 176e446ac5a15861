"""A case at rest in intake's store: the patient's identity and contact, the physician's name,
the clinical summary, and a record's bytes, file name and plain SHA-256 appear nowhere in any
document of the store (sealed, each bound to where it is kept; the document id is a keyed
digest), while the patient still gets every one of them back."""

import hashlib
from typing import Any

import pytest

from tests.support.basics import MONGO_URL
from tests.support.privacy import assert_absent, stored_bytes

pytestmark = pytest.mark.infra

DRAFT = {
    "patient": {
        "given_name": "Maëlle",
        "family_name": "Quintard",
        "birth_date": "1981-04-17",
        "email": "maelle.quintard@example.org",
        "phone": "+33 6 41 27 58 93",
        "preferred_language": "fr",
    },
    "physician": {
        "name": "Dr Hélène Brossard",
        "institution_code": "FR-750100",
        "email": "helene.brossard@clinique.example",
    },
    "specialty": "oncology",
    "questions": ["treatment_alternatives"],
    "clinical_summary": "Glioblastome suspecté, chimiothérapie proposée par Temozolomide.",
}
IN_CLEAR_BEFORE = {
    "given name": "Maëlle",
    "family name": "Quintard",
    "email": "maelle.quintard@example.org",
    "phone": "+33 6 41 27 58 93",
    "birth date": "1981-04-17",
    "physician's name": "Hélène Brossard",
    "physician's email": "helene.brossard@clinique.example",
    "clinical summary": "Glioblastome suspecté",
}
FILENAME = "Compte-rendu IRM Maëlle Quintard.pdf"
MARKER = "Lesion-du-lobe-temporal-gauche-7mm"
RECORD = f"%PDF-1.4\n% {MARKER}\ntrailer << >>\n%%EOF\n".encode()


async def draft_with_record(patient: Any) -> tuple[str, dict[str, Any]]:
    """A draft holding the record: its case id and the record's metadata as answered."""
    case_id: str = (await patient.post("/v1/cases", json=DRAFT)).json()["case_id"]
    upload = await patient.post(
        f"/v1/cases/{case_id}/documents",
        files={"file": (FILENAME, RECORD, "application/pdf")},
        data={"kind": "imaging_report"},
    )
    assert upload.status_code == 201, upload.text
    meta: dict[str, Any] = upload.json()
    return case_id, meta


async def test_a_case_and_its_record_are_sealed_at_rest_and_open_for_the_patient(
    intake: Any,
) -> None:
    patient = intake.client()
    case_id, meta = await draft_with_record(patient)
    sha256 = hashlib.sha256(RECORD).hexdigest()
    assert (meta["filename"], meta["sha256"]) == (FILENAME, sha256)
    assert meta["document_id"] != sha256
    url = f"/v1/cases/{case_id}/documents/{meta['document_id']}"
    download = await patient.get(url)
    assert download.status_code == 200 and download.content == RECORD
    listed = (await patient.get(f"/v1/cases/{case_id}")).json()["documents"]
    assert [(d["filename"], d["sha256"]) for d in listed] == [(FILENAME, sha256)]

    clinical = (await patient.get(f"/v1/cases/{case_id}/clinical")).json()
    assert clinical["patient"]["family_name"] == "Quintard"
    assert clinical["patient"]["phone"] == "+33 6 41 27 58 93"
    assert clinical["clinical_summary"] == DRAFT["clinical_summary"]
    assert clinical["physician"] == {
        "name": "Dr Hélène Brossard",
        "institution_code": "FR-750100",
    }

    stored = await stored_bytes(MONGO_URL, intake.settings.database)
    assert meta["document_id"].encode() in stored  # the scan reads the record's documents
    assert b"FR-750100" in stored  # and the case's (an institution's code stays in clear)
    secrets = {"record's content": MARKER, "record's file name": FILENAME, "record's hash": sha256}
    assert_absent(secrets | IN_CLEAR_BEFORE, {"intake store": stored})


async def test_the_same_file_is_one_record_on_its_case_and_unlinkable_across_cases(
    intake: Any,
) -> None:
    patient = intake.client()
    case_id, first = await draft_with_record(patient)
    again = await patient.post(
        f"/v1/cases/{case_id}/documents",
        files={"file": (FILENAME, RECORD, "application/pdf")},
        data={"kind": "imaging_report"},
    )
    assert again.status_code == 200 and again.json()["document_id"] == first["document_id"]
    _, other = await draft_with_record(intake.client())
    assert other["document_id"] != first["document_id"]
    assert other["sha256"] == first["sha256"]
