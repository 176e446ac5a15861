"""A request for more information, end to end on loopback over the real broker and store: the
specialist of an accepted review asks, the SLA clock stands, the patient reads the question
and answers through intake (with a record), the due date moves by exactly the pause, the case
goes back to review by the sequence rule, and the opinion makes the report. Bad input on the
way gets a clear 4xx."""

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from avis.reports.main import create_app as create_reports_app
from avis.review.main import create_app as create_review_app
from avis.shared.security import Role
from avis.shared.topics import CASE_SUBMITTED, REPORT_READY, REVIEW_ASSIGNED, REVIEW_COMPLETED
from tests.support.basics import MONGO_URL, eventually, serve, skip_history, unique
from tests.support.intake import running_intake
from tests.support.privacy import assert_absent, record_bytes, stored_bytes
from tests.support.reports import reports_settings
from tests.support.review import bearer_client, review_settings
from tests.support.samples import OPINION, case_body, consent_body, pdf, upload
from tests.support.topics import TopicReader

pytestmark = pytest.mark.infra

QUESTION = "Merci d'envoyer le compte rendu opératoire de 2024 et la dernière créatininémie."
ANSWER = "Voici le compte rendu ; la créatininémie de mars était à 92 µmol/L."


async def test_a_request_pauses_the_review_until_the_patient_answers() -> None:
    review_config = review_settings()
    reports_config = reports_settings()
    await skip_history(f"avis-{review_config.service_name}", [CASE_SUBMITTED])
    await skip_history(f"avis-{reports_config.service_name}", [CASE_SUBMITTED, REVIEW_COMPLETED])
    review_app = create_review_app(review_config)
    reports_app = create_reports_app(reports_config)
    topics = await TopicReader(
        CASE_SUBMITTED, REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY
    ).mark()

    def client(url: str, sub: str, role: Role) -> httpx.AsyncClient:
        return bearer_client(review_config, url, sub, role)

    async with (
        running_intake() as intake,
        serve(review_app) as review_url,
        serve(reports_app) as reports_url,
    ):
        await eventually(lambda: review_app.state.runtime.kafka_started, timeout=60)
        await eventually(lambda: reports_app.state.runtime.kafka_started, timeout=60)
        reviewer_id, other_id = unique("onc"), unique("derm")
        async with client(review_url, "coord-e2e", "coordinator") as coordinator:
            for rid, specialty in ((reviewer_id, "oncology"), (other_id, "dermatology")):
                created = await coordinator.post(
                    "/v1/reviewers",
                    json={
                        "id": rid,
                        "display_name": f"Dr {rid}",
                        "specialties": [specialty],
                        "languages": ["fr", "en"],
                        "capacity": 5,
                    },
                )
                assert created.status_code == 201, created.text

        patient = intake.client(role="patient")
        draft = await patient.post("/v1/cases", json=case_body(specialty="oncology"))
        assert draft.status_code == 201, draft.text
        case_id = draft.json()["case_id"]
        assert (await patient.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))).is_success
        submitted = await patient.post(f"/v1/cases/{case_id}/submit", json=consent_body())
        assert submitted.status_code == 200, submitted.text

        async with (
            client(review_url, reviewer_id, "reviewer") as reviewer,
            client(review_url, other_id, "reviewer") as stranger,
            client(review_url, "coord-e2e", "coordinator") as coordinator,
        ):

            async def assignment() -> dict[str, Any] | None:
                items = (await reviewer.get("/v1/assignments")).json()["items"]
                return next((a for a in items if a["case_id"] == case_id), None)

            assigned = await eventually(assignment, timeout=60)
            url = f"/v1/assignments/{assigned['id']}"
            ask = f"{url}/information-requests"
            # Not accepted yet: 409; someone else's: 403; an empty text: 422.
            early = await reviewer.post(ask, json={"text": QUESTION})
            assert early.status_code == 409, early.text
            assert "accepted" in early.json()["detail"]
            assert (await reviewer.post(f"{url}/accept")).status_code == 200
            assert (await stranger.post(ask, json={"text": QUESTION})).status_code in (403, 404)
            blank = await reviewer.post(ask, json={"text": "  "})
            assert blank.status_code == 422, blank.text

            due_before = _at(assigned["due_at"])
            asked = await reviewer.post(ask, json={"text": QUESTION})
            assert asked.status_code == 201, asked.text
            (request,) = asked.json()["information_requests"]
            assert request["state"] == "open" and asked.json()["paused_since"]
            assert QUESTION not in asked.text, "the question is read in intake, with the case"
            twice = await reviewer.post(ask, json={"text": QUESTION})
            assert twice.status_code == 409 and "already open" in twice.json()["detail"]
            waiting = await reviewer.post(f"{url}/opinion", json=OPINION)
            assert waiting.status_code == 409, "the opinion waits for the answer"
            listed = await coordinator.get("/v1/information-requests", params={"state": "open"})
            assert request["id"] in [r["id"] for r in listed.json()["items"]]

            # The patient sees the case wait for them, reads the question, adds a record.
            case = await eventually(lambda: _status(patient, case_id, "awaiting_information"))
            assert [e["kind"] for e in case["timeline"]][-1] == "information_requested"
            assert QUESTION not in str(case), "the case view carries no clinical text"
            clinical = (await patient.get(f"/v1/cases/{case_id}/clinical")).json()
            assert clinical["information_requests"][0]["question"] == QUESTION
            answer_url = f"/v1/cases/{case_id}/information-requests/{request['id']}/answer"
            unknown = f"/v1/cases/{case_id}/information-requests/{request['id']}x/answer"
            assert (await patient.post(unknown, json={"text": ANSWER})).status_code == 404
            empty = await patient.post(answer_url, json={"text": ""})
            assert empty.status_code == 422, empty.text
            added = await patient.post(f"/v1/cases/{case_id}/documents", **upload(pdf("op")))
            assert added.status_code == 201, added.text
            answered = await patient.post(answer_url, json={"text": ANSWER})
            assert answered.status_code == 200, answered.text
            again = await patient.post(answer_url, json={"text": ANSWER})
            assert again.status_code == 409, again.text

            # The clock resumes: the due date moved by exactly the pause.
            async def resumed() -> dict[str, Any] | None:
                found = await assignment()
                done = found and found["information_requests"][0]["state"] == "answered"
                return found if done else None

            moved = await eventually(resumed, timeout=60)
            (closed,) = moved["information_requests"]
            pause = _at(closed["answered_at"]) - _at(closed["requested_at"])
            assert pause > timedelta(0)
            assert _at(moved["due_at"]) - due_before == pause
            assert closed["paused_seconds"] == pause.total_seconds()
            assert moved["paused_since"] is None and not moved["overdue"]

            case = await eventually(lambda: _status(patient, case_id, "in_review"))
            kinds = [e["kind"] for e in case["timeline"]]
            assert kinds[-3:] == ["information_requested", "information_provided", "review_resumed"]
            reader = intake.client(reviewer_id, role="reviewer")
            seen = (await reader.get(f"/v1/cases/{case_id}/clinical")).json()
            (shown,) = seen["information_requests"]
            assert (shown["answer"], shown["documents_added"]) == (ANSWER, 1)
            assert len(seen["documents"]) == 2

            written = await reviewer.post(f"{url}/opinion", json=OPINION)
            assert written.status_code == 201, written.text

        async with client(reports_url, patient.sub, "patient") as reader:  # type: ignore[attr-defined]

            async def report() -> dict[str, Any] | None:
                response = await reader.get(f"/v1/cases/{case_id}/report")
                return response.json() if response.status_code == 200 else None

            assert (await eventually(report, timeout=60))["version"] == 1
        case = await eventually(lambda: _status(patient, case_id, "report_ready"), timeout=60)
        assert case["timeline"][-1]["kind"] == "report_ready"

        # The question and the answer are in clear nowhere: not on the topics, not at rest.
        await topics.caught_up()
        haystacks = {"topics": record_bytes(topics.records)}
        for name, database in (
            ("intake", intake.settings.database),
            ("review", review_config.database),
            ("reports", reports_config.database),
        ):
            haystacks[f"{name} store"] = await stored_bytes(MONGO_URL, database)
        assert case_id.encode() in haystacks["intake store"]  # the scan reads intake's documents
        assert_absent({"question": QUESTION, "answer": ANSWER}, haystacks)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def _status(patient: httpx.AsyncClient, case_id: str, status: str) -> dict[str, Any] | None:
    response = await patient.get(f"/v1/cases/{case_id}")
    assert response.status_code == 200, response.text
    case = dict(response.json())
    return case if case["status"] == status else None
