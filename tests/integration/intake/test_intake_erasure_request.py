"""The patient asks for their case's data to be erased: the request is on the case, in its
timeline and in its access trail, once, and is carried out (test_intake_erasure.py); nobody
else may ask."""

from typing import Any

import pytest

from tests.integration.intake.test_intake_access_log import filed

pytestmark = pytest.mark.infra


async def test_the_patient_asks_for_erasure_once(intake: Any) -> None:
    patient, case_id, _ = await filed(intake)
    path = f"/v1/cases/{case_id}/erasure-request"
    asked = await patient.post(path)
    assert asked.status_code == 200, asked.text
    at = asked.json()["erasure_requested_at"]
    assert at is not None
    kinds = [e["kind"] for e in asked.json()["timeline"]]
    assert kinds[-2:] == ["erasure_requested", "erased"], "carried out at once, without a hold"

    again = await patient.post(path)
    assert again.status_code == 200
    assert again.json()["erasure_requested_at"] == at, "asking again changes nothing"
    assert [e["kind"] for e in again.json()["timeline"]].count("erasure_requested") == 1

    log = (await patient.get(f"/v1/cases/{case_id}/access-log?limit=100")).json()["items"]
    assert [e["action"] for e in log].count("case.erasure-request") == 1


async def test_only_the_patient_of_the_case_asks(intake: Any) -> None:
    patient, case_id, _ = await filed(intake)
    path = f"/v1/cases/{case_id}/erasure-request"
    assert (await intake.client().post(path)).status_code == 404, "another patient"
    assert (await intake.client(role="coordinator").post(path)).status_code == 403
    case = (await patient.get(f"/v1/cases/{case_id}")).json()
    assert case["erasure_requested_at"] is None


async def test_a_partner_that_filed_the_case_may_not_ask(intake: Any) -> None:
    partner = intake.client(role="partner")
    created = await partner.post(
        "/v1/cases",
        json={
            "patient": {
                "given_name": "Lou",
                "family_name": "Perrin",
                "birth_date": "1980-01-01",
                "email": "lou.perrin@example.org",
                "preferred_language": "fr",
            },
            "specialty": "cardiology",
            "questions": ["diagnosis_clarification"],
            "clinical_summary": "Chest pain.",
        },
    )
    assert created.status_code == 201, created.text
    refused = await partner.post(f"/v1/cases/{created.json()['case_id']}/erasure-request")
    assert refused.status_code == 403
    assert "only the patient" in refused.json()["detail"]
