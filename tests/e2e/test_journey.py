"""The journey across services, on loopback over the real broker and store: a case drafted,
documented and submitted through intake is matched by review, declined, re-assigned, accepted
and answered, and intake's timeline follows every step."""

from typing import Any

import httpx
import pytest

from avis.review.main import create_app as create_review_app
from avis.shared.security import Role
from avis.shared.topics import CASE_SUBMITTED
from tests.support.basics import eventually, serve, skip_history, unique
from tests.support.intake import running_intake
from tests.support.review import bearer_client, review_settings
from tests.support.samples import OPINION, case_body, consent_body, pdf, upload

pytestmark = pytest.mark.infra

RANK = {"draft": 0, "submitted": 1, "assigned": 2, "in_review": 3, "report_ready": 4}


async def test_intake_timeline_follows_the_review_step_by_step() -> None:
    settings = review_settings()
    await skip_history(f"avis-{settings.service_name}", [CASE_SUBMITTED])
    review_app = create_review_app(settings)

    def review_client(url: str, sub: str, role: Role) -> httpx.AsyncClient:
        return bearer_client(settings, url, sub, role)

    async with running_intake() as intake, serve(review_app) as review_url:
        await eventually(lambda: review_app.state.runtime.kafka_started, timeout=60)
        p = unique("onc")
        first, second = f"{p}-1", f"{p}-2"
        async with review_client(review_url, "coord-e2e", "coordinator") as coordinator:
            for rid in (first, second):
                response = await coordinator.post(
                    "/v1/reviewers",
                    json={
                        "id": rid,
                        "display_name": f"Reviewer {rid}",
                        "specialties": ["oncology"],
                        "languages": ["fr", "en"],
                        "institution_code": "HOSP-E2E",
                        "capacity": 5,
                    },
                )
                assert response.status_code == 201, response.text

            # The patient drafts, documents and submits the case through intake.
            patient = intake.client(role="patient")
            draft = await patient.post("/v1/cases", json=case_body(specialty="oncology"))
            assert draft.status_code == 201, draft.text
            case_id = draft.json()["case_id"]
            stored = await patient.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))
            assert stored.status_code == 201, stored.text
            submitted = await patient.post(f"/v1/cases/{case_id}/submit", json=consent_body())
            assert submitted.status_code == 200, submitted.text

            async def rounds() -> list[dict[str, Any]]:
                page = await coordinator.get("/v1/assignments", params={"case_id": case_id})
                return sorted(page.json()["items"], key=lambda a: a["round"])

            (round_1,) = await eventually(rounds)
            assert round_1["reviewer_id"] == first  # both free: the smaller id wins
            await eventually(lambda: _timeline_has(patient, case_id, "assigned"))

        # The first reviewer reads the case at intake, then declines it.
        first_at_intake = intake.client(first, role="reviewer")
        assert (await first_at_intake.get(f"/v1/cases/{case_id}/clinical")).status_code == 200
        async with review_client(review_url, first, "reviewer") as reviewer:
            declined = await reviewer.post(
                f"/v1/assignments/{round_1['id']}/decline",
                json={"reason_code": "no_availability", "reason": "Away next week"},
            )
            assert declined.status_code == 200, declined.text

        async def second_round() -> dict[str, Any] | None:
            async with review_client(review_url, second, "reviewer") as http:
                items = (await http.get("/v1/assignments")).json()["items"]
            return next((a for a in items if a["case_id"] == case_id), None)

        round_2 = await eventually(second_round)
        await eventually(lambda: _timeline_count(patient, case_id, "assigned", 2))
        second_at_intake = intake.client(second, role="reviewer")
        await eventually(lambda: _reads(second_at_intake, case_id, 200))
        await eventually(lambda: _reads(first_at_intake, case_id, 404))

        # The second reviewer accepts and answers.
        async with review_client(review_url, second, "reviewer") as reviewer:
            url = f"/v1/assignments/{round_2['id']}"
            assert (await reviewer.post(f"{url}/accept")).status_code == 200
            await eventually(lambda: _status_is(patient, case_id, "in_review"))
            answered = await reviewer.post(f"{url}/opinion", json=OPINION)
            assert answered.status_code == 201, answered.text

        case = await eventually(lambda: _timeline_has(patient, case_id, "review_completed"))
        kinds = [e["kind"] for e in case["timeline"]]
        assert kinds == [
            "created",
            "submitted",
            "assigned",
            "declined",
            "assigned",
            "accepted",
            "review_completed",
        ]
        statuses = [RANK[e["status"]] for e in case["timeline"]]
        assert statuses == sorted(statuses), "the status only moves forward"
        assert case["status"] == "in_review"


async def _case(patient: httpx.AsyncClient, case_id: str) -> dict[str, Any]:
    response = await patient.get(f"/v1/cases/{case_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _timeline_count(
    patient: httpx.AsyncClient, case_id: str, kind: str, count: int
) -> dict[str, Any] | None:
    case = await _case(patient, case_id)
    return case if [e["kind"] for e in case["timeline"]].count(kind) >= count else None


async def _timeline_has(
    patient: httpx.AsyncClient, case_id: str, kind: str
) -> dict[str, Any] | None:
    return await _timeline_count(patient, case_id, kind, 1)


async def _status_is(patient: httpx.AsyncClient, case_id: str, status: str) -> bool:
    return bool((await _case(patient, case_id))["status"] == status)


async def _reads(reviewer: httpx.AsyncClient, case_id: str, status: int) -> bool:
    return (await reviewer.get(f"/v1/cases/{case_id}/clinical")).status_code == status
