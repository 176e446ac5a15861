"""A case a partner files has no patient until the patient claims it, with the one-time secret
sealed in `avis.case.submitted.v1` (the link of their first email): a wrong secret is the 404 of
a case that does not exist, the right one makes the case the patient's, once."""

from datetime import UTC, datetime
from typing import Any

import pytest

from avis.shared import topics
from avis.shared.events import CaseClaimed, CaseSubmitted, ClaimSecret
from tests.support.kms import opened
from tests.support.privacy import record_bytes
from tests.support.topics import TopicReader, header

pytestmark = pytest.mark.infra

DRAFT = {
    "patient": {
        "given_name": "Nora",
        "family_name": "Vidal",
        "birth_date": "1975-03-02",
        "email": "nora.vidal@example.org",
        "preferred_language": "en",
    },
    "specialty": "cardiology",
    "questions": ["diagnosis_clarification"],
    "clinical_summary": "Palpitations at rest.",
}
RECORD = b"%PDF-1.4\n% claim\ntrailer << >>\n%%EOF\n"


def consent(*scopes: str) -> dict[str, Any]:
    """A submission consenting to `scopes`."""
    at = datetime.now(UTC).isoformat()
    return {"consent": {"text_version": "c-1", "accepted_at": at, "scopes": list(scopes)}}


async def test_a_patient_claims_a_partner_filed_case_once(intake: Any) -> None:
    tail = await TopicReader(topics.CASE_SUBMITTED).mark()
    partner = intake.client(role="partner")
    created = await partner.post("/v1/cases", json=DRAFT)
    assert created.status_code == 201, created.text
    case_id = created.json()["case_id"]
    stored = await partner.post(
        f"/v1/cases/{case_id}/documents",
        files={"file": ("scan.pdf", RECORD + case_id.encode())},
        data={"kind": "imaging_report"},
    )
    assert stored.status_code == 201, stored.text
    done = await partner.post(f"/v1/cases/{case_id}/submit", json=consent("review"))
    assert done.status_code == 200, done.text

    [record] = await tail.records_for(case_id, ce_type="avis.case.submitted.v1")
    payload = CaseSubmitted.model_validate_json(record.value or b"")
    assert payload.patient_id is None
    assert payload.claim is not None, "a case without a patient carries a claim secret"
    sealed = await opened(intake.settings, payload.claim, aad=header(record, "ce_id"))
    secret = ClaimSecret.model_validate_json(sealed)
    assert len(secret.secret) >= 43
    assert secret.secret.encode() not in record_bytes([record]), "the secret travels sealed"
    case_doc = await intake.store.cases.find_one({"_id": case_id})
    assert secret.secret not in repr(case_doc), "intake keeps a digest, never the secret"

    patient = intake.client()
    assert (await patient.get(f"/v1/cases/{case_id}")).status_code == 404, "not theirs yet"
    wrong = await patient.post(f"/v1/cases/{case_id}/claim", json={"secret": "x" * 43})
    assert wrong.status_code == 404, wrong.text
    assert wrong.json()["type"].endswith("case-not-found")
    unknown = "00000000-0000-4000-8000-000000000000"
    missing = await patient.post(f"/v1/cases/{unknown}/claim", json={"secret": secret.secret})
    assert missing.status_code == 404 and missing.json()["type"] == wrong.json()["type"]

    claimed = await patient.post(f"/v1/cases/{case_id}/claim", json={"secret": secret.secret})
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["case_id"] == case_id
    read = await patient.get(f"/v1/cases/{case_id}")
    assert read.status_code == 200, read.text
    clinical = await patient.get(f"/v1/cases/{case_id}/clinical")
    assert clinical.status_code == 200, clinical.text
    assert clinical.json()["patient"]["family_name"] == "Vidal"
    listed = await patient.get("/v1/cases")
    assert case_id in [c["case_id"] for c in listed.json()["items"]]

    again = await patient.post(f"/v1/cases/{case_id}/claim", json={"secret": secret.secret})
    assert again.status_code == 409, again.text
    assert again.json()["type"].endswith("already-claimed")
    other = intake.client()
    stolen = await other.post(f"/v1/cases/{case_id}/claim", json={"secret": secret.secret})
    assert stolen.status_code == 409, "a second claim, by anyone, is refused"
    assert (await other.get(f"/v1/cases/{case_id}")).status_code == 404

    # Reports and notify learn the patient from one `avis.case.claimed.v1`, in the case's order.
    [event] = await tail.records_for(case_id, ce_type="avis.case.claimed.v1")
    assert CaseClaimed.model_validate_json(event.value or b"").patient_id == patient.sub
    # The trail shows the claim, and the claims that failed on this case, to the patient.
    log = await patient.get(f"/v1/cases/{case_id}/access-log?limit=100")
    assert log.status_code == 200, log.text
    claims = [
        (e["outcome"], e["status"], e["you"])
        for e in log.json()["items"]
        if e["action"] == "case.claim"
    ]
    assert claims == [
        ("refused", 404, True),
        ("allowed", 200, True),
        ("refused", 409, True),
        ("refused", 409, False),
    ], claims


async def test_a_patients_own_case_has_nothing_to_claim(intake: Any) -> None:
    tail = await TopicReader(topics.CASE_SUBMITTED).mark()
    patient = intake.client()
    created = await patient.post("/v1/cases", json=DRAFT)
    case_id = created.json()["case_id"]
    await patient.post(
        f"/v1/cases/{case_id}/documents",
        files={"file": ("scan.pdf", RECORD + case_id.encode())},
        data={"kind": "imaging_report"},
    )
    done = await patient.post(f"/v1/cases/{case_id}/submit", json=consent("review"))
    assert done.status_code == 200, done.text
    [record] = await tail.records_for(case_id, ce_type="avis.case.submitted.v1")
    assert CaseSubmitted.model_validate_json(record.value or b"").claim is None
    claim = await intake.client().post(f"/v1/cases/{case_id}/claim", json={"secret": "y" * 43})
    assert claim.status_code == 404


async def test_only_a_patient_claims(intake: Any) -> None:
    partner = intake.client(role="partner")
    case_id = "00000000-0000-4000-8000-000000000001"
    refused = await partner.post(f"/v1/cases/{case_id}/claim", json={"secret": "z" * 43})
    assert refused.status_code == 403
