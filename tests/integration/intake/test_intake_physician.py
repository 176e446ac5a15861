"""The treating physician's contact at intake, on the real broker and store: given with the
`share_with_physician` consent, it travels sealed under the case key in `avis.case.submitted.v1`
and never in clear; an email without the consent, or the consent without an email, is a 422
that says which, and changes nothing."""

import json
from typing import Any

import httpx
import pytest

from avis.shared import topics
from avis.shared.envelope import Event
from avis.shared.events import CaseSubmitted
from tests.support.basics import eventually
from tests.support.intake import Intake
from tests.support.kms import opened
from tests.support.problems import assert_problem
from tests.support.samples import case_body, consent_body, pdf, upload
from tests.support.topics import TopicReader

pytestmark = pytest.mark.infra

PHYSICIAN = {
    "name": "Dr Armelle Kerjean",
    "institution_code": "290000017",
    "email": "armelle.kerjean@chu-brest.example",
    "language": "en",
}


async def draft(patient: httpx.AsyncClient, physician: dict[str, Any]) -> str:
    """A draft with one record and the physician given."""
    created = await patient.post("/v1/cases", json=case_body(physician=physician))
    assert created.status_code == 201, created.text
    case_id: str = created.json()["case_id"]
    stored = await patient.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))
    assert stored.status_code == 201, stored.text
    return case_id


async def test_the_physician_travels_sealed_only_with_the_consent(intake: Intake) -> None:
    tail = await TopicReader(topics.CASE_SUBMITTED).mark()
    patient = intake.client()
    case_id = await draft(patient, PHYSICIAN)
    submitted = await patient.post(
        f"/v1/cases/{case_id}/submit", json=consent_body("review", "share_with_physician")
    )
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["consent"]["scopes"] == ["review", "share_with_physician"]

    (record,) = await tail.records_for(case_id, expect=1)
    event = Event.from_kafka(record.topic, dict(record.headers), record.value or b"")
    payload = event.payload()
    assert isinstance(payload, CaseSubmitted)
    assert payload.physician is not None
    physician = json.loads(await opened(intake.settings, payload.physician, aad=event.id))
    secret = physician.pop("link_secret")
    assert physician == PHYSICIAN
    assert len(secret) >= 43, "256 random bits"
    assert secret.encode() not in (record.value or b"")
    raw = record.value or b""
    for clear in ("Kerjean", "armelle.kerjean@chu-brest.example"):
        assert clear.encode() not in raw
    stored = await intake.store.cases.find_one({"_id": case_id})
    assert "Kerjean" not in repr(stored) and "chu-brest" not in repr(stored)
    assert secret not in repr(stored), "intake keeps no trace of the link's secret"


async def test_without_the_physician_no_physician_travels(intake: Intake) -> None:
    tail = await TopicReader(topics.CASE_SUBMITTED).mark()
    patient = intake.client()
    case_id = await draft(patient, {"name": "Dr Bernard", "institution_code": "750712184"})
    submitted = await patient.post(f"/v1/cases/{case_id}/submit", json=consent_body())
    assert submitted.status_code == 200, submitted.text
    (record,) = await tail.records_for(case_id, expect=1)
    payload = Event.from_kafka(record.topic, dict(record.headers), record.value or b"").payload()
    assert isinstance(payload, CaseSubmitted)
    assert payload.physician is None


@pytest.mark.parametrize(
    ("physician", "scopes", "slug", "says"),
    [
        (PHYSICIAN, ("review",), "physician-consent-required", "share_with_physician"),
        (
            {"name": "Dr Bernard", "institution_code": "750712184"},
            ("review", "share_with_physician"),
            "physician-contact-required",
            "physician.email",
        ),
    ],
)
async def test_an_email_and_its_consent_come_together(
    intake: Intake, physician: dict[str, Any], scopes: tuple[str, ...], slug: str, says: str
) -> None:
    patient = intake.client()
    case_id = await draft(patient, physician)
    await eventually(lambda: intake.store.cases.find_one({"_id": case_id, "outbox_pending": 0}))
    before = await intake.store.cases.find_one({"_id": case_id})
    body = assert_problem(
        await patient.post(f"/v1/cases/{case_id}/submit", json=consent_body(*scopes)), 422, slug
    )
    assert says in body["detail"]
    assert [e["field"] for e in body["errors"]] == ["body.consent.scopes"]
    assert await intake.store.cases.find_one({"_id": case_id}) == before
    assert (await patient.get(f"/v1/cases/{case_id}")).json()["status"] == "draft"


async def test_a_bad_physician_email_is_refused_at_the_draft(intake: Intake) -> None:
    patient = intake.client()
    response = await patient.post(
        "/v1/cases", json=case_body(physician={**PHYSICIAN, "email": "not an address"})
    )
    body = assert_problem(response, 422)
    assert any(e["field"] == "body.physician.email" for e in body["errors"])
