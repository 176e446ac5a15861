"""International review's consent at intake, on the real broker and store: the patient accepts a
specialist who does not read their language only by the consent's own scope (default no), and
`avis.case.submitted.v1` tells review by its `international_review` flag, never by a scope its
released readers do not know."""

import pytest

from avis.shared import topics
from avis.shared.envelope import Event
from avis.shared.events import CaseSubmitted
from tests.support.intake import Intake
from tests.support.samples import case_body, consent_body, pdf, upload
from tests.support.topics import TopicReader

pytestmark = pytest.mark.infra


async def submitted_with(intake: Intake, *scopes: str) -> tuple[dict[str, object], CaseSubmitted]:
    tail = await TopicReader(topics.CASE_SUBMITTED).mark()
    patient = intake.client()
    created = await patient.post("/v1/cases", json=case_body())
    assert created.status_code == 201, created.text
    case_id = created.json()["case_id"]
    stored = await patient.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))
    assert stored.status_code == 201, stored.text
    submitted = await patient.post(f"/v1/cases/{case_id}/submit", json=consent_body(*scopes))
    assert submitted.status_code == 200, submitted.text
    (record,) = await tail.records_for(case_id, expect=1)
    payload = Event.from_kafka(record.topic, dict(record.headers), record.value or b"").payload()
    assert isinstance(payload, CaseSubmitted)
    return submitted.json(), payload


async def test_the_patient_accepts_an_international_review_by_its_own_scope(
    intake: Intake,
) -> None:
    view, payload = await submitted_with(intake, "review", "international_review")
    assert view["consent"]["scopes"] == ["review", "international_review"]  # type: ignore[index]
    assert payload.international_review is True
    assert [s.value for s in payload.consent_scopes] == ["review"]


async def test_without_the_scope_no_international_review(intake: Intake) -> None:
    view, payload = await submitted_with(intake, "review")
    assert view["consent"]["scopes"] == ["review"]  # type: ignore[index]
    assert payload.international_review is False
