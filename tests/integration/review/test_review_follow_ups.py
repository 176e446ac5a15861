"""Follow-up questions in review over the real broker and store: asked by the case's patient
once its report is issued (reports' `avis.report.ready.v1`), each to the specialist of the
completed round with its own due date and the case's next sequence number; read and answered by
that specialist; a fourth refused. The question and the answer are sealed at rest and on the
topics (bound to the event id), and each write and read is in the case's access trail."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from avis.shared.envelope import Event
from avis.shared.events import FollowUpAnswer, FollowUpQuestion, ReportReady
from avis.shared.sealing import Sealed
from tests.support.basics import MONGO_URL, eventually, publish, unique
from tests.support.privacy import assert_absent, record_bytes, stored_bytes
from tests.support.review import ReviewStack
from tests.support.topics import header

pytestmark = pytest.mark.infra

ASSIGNED = "avis.review.assigned.v1"
ASKED = "avis.review.follow-up-asked.v1"
ANSWERED = "avis.review.follow-up-answered.v1"
COMPLETED = "avis.review.completed.v1"
QUESTION = "La fatigue que je ressens depuis l'opération peut-elle venir du bêtabloquant ?"
ANSWER = "C'est possible : parlez-en à votre cardiologue avant toute modification."
OPINION = {
    "diagnosis": {"assessment": "confirmed", "explanation": "Le diagnostic est confirmé."},
    "imaging_and_lab_review": "Rien à ajouter.",
    "alternative_pathways": "Aucune.",
    "risk_benefit": "Favorable.",
    "further_tests": "Aucun.",
    "summary_for_patient": "Le diagnostic est confirmé.",
}


async def _answered_case(stack: ReviewStack, patient: str) -> tuple[str, dict[str, Any]]:
    """A case of `patient`, matched, accepted and answered; its id and assignment."""
    p = unique("fu")
    await stack.add_reviewer(f"{p}-1", ["cardiology"], ["fr"])
    case_id = await stack.submit("cardiology", patient_id=patient)
    await stack.log.wait(case_id, ASSIGNED)
    assignment = await stack.assignment(case_id)
    url = f"/v1/assignments/{assignment['id']}"
    async with stack.client(assignment["reviewer_id"], "reviewer") as http:
        assert (await http.post(f"{url}/accept")).status_code == 200
        assert (await http.post(f"{url}/opinion", json=OPINION)).status_code == 201
    return case_id, assignment


def _report_ready(case_id: str, at: datetime) -> Event:
    payload = ReportReady(
        case_id=case_id,
        report_id=unique("report"),
        version=1,
        languages=["fr"],
        formats=["application/json"],
        ready_at=at,
        report_url="http://127.0.0.1:8003/v1/reports/x?version=1",
        seq=3,
    )
    return Event.new(payload, "/avis/reports")


async def test_three_questions_after_the_report_each_answered_by_its_specialist(
    stack: ReviewStack,
) -> None:
    patient = unique("patient")
    case_id, assignment = await _answered_case(stack, patient)
    ask = f"/v1/cases/{case_id}/follow-ups"
    async with (
        stack.client(patient, "patient") as asker,
        stack.client(assignment["reviewer_id"], "reviewer") as reviewer,
        stack.client(unique("patient"), "patient") as stranger,
    ):
        early = await asker.post(ask, json={"text": QUESTION})
        assert early.status_code == 409 and early.json()["type"].endswith("follow-up-no-report")

        await publish(stack.publisher, _report_ready(case_id, datetime.now(UTC)))

        async def asked_once() -> Any:
            answer = await asker.post(ask, json={"text": QUESTION})
            return None if answer.status_code == 409 else answer

        asked = await eventually(asked_once, timeout=30)
        assert asked.status_code == 201, asked.text
        follow_up = asked.json()
        assert follow_up["assignment_id"] == assignment["id"] and follow_up["question"] is None
        due = datetime.fromisoformat(follow_up["due_at"]) - datetime.fromisoformat(
            follow_up["asked_at"]
        )
        assert due == timedelta(days=stack.settings.follow_up_due_days)
        assert (await stranger.post(ask, json={"text": QUESTION})).status_code == 404
        assert (await stranger.get(f"/v1/follow-ups/{follow_up['id']}")).status_code == 404

        (record,) = await stack.log.records_for(case_id, 1, ce_type=ASKED)
        (completed,) = stack.log.payloads(case_id, COMPLETED)
        published = json.loads(record.value or b"{}")
        assert published["seq"] > completed["seq"], "back to review by the sequence rule"
        sealed = Sealed.model_validate(published["question"])
        opened = stack.keyring.open_model(sealed, header(record, "ce_id"), FollowUpQuestion)
        assert opened.text == QUESTION

        mine = (await reviewer.get("/v1/follow-ups")).json()["items"]
        assert [f["id"] for f in mine] == [follow_up["id"]]
        read = (await reviewer.get(f"/v1/follow-ups/{follow_up['id']}")).json()
        assert read["question"] == QUESTION
        answer_url = f"/v1/follow-ups/{follow_up['id']}/answer"
        assert (await asker.post(answer_url, json={"text": ANSWER})).status_code == 403
        answered = await reviewer.post(answer_url, json={"text": ANSWER})
        assert answered.status_code == 200, answered.text
        assert (await reviewer.post(answer_url, json={"text": ANSWER})).status_code == 409
        assert (await reviewer.get("/v1/follow-ups")).json()["items"] == []
        seen = (await asker.get(f"/v1/follow-ups/{follow_up['id']}")).json()
        assert (seen["question"], seen["answer"]) == (QUESTION, ANSWER)

        (answer_record,) = await stack.log.records_for(case_id, 1, ce_type=ANSWERED)
        answer_payload = json.loads(answer_record.value or b"{}")
        assert answer_payload["seq"] > published["seq"]
        content = stack.keyring.open_model(
            Sealed.model_validate(answer_payload["answer"]),
            header(answer_record, "ce_id"),
            FollowUpAnswer,
        )
        assert (content.question, content.answer) == (QUESTION, ANSWER)

        for _ in range(2):
            assert (await asker.post(ask, json={"text": "Encore une."})).status_code == 201
        fourth = await asker.post(ask, json={"text": "Une quatrième."})
        assert fourth.status_code == 409 and fourth.json()["type"].endswith("follow-up-limit")

        trail = (await asker.get(f"/v1/cases/{case_id}/access-log")).json()["items"]
        actions = [e["action"] for e in trail]
        assert {"follow-up.create", "follow-up.read", "follow-up.answer"} <= set(actions)

    stored = await stored_bytes(MONGO_URL, stack.settings.database)
    assert assignment["id"].encode() in stored  # the scan reads review's documents
    haystacks = {"review store": stored, "topics": record_bytes(stack.log.records)}
    assert_absent({"question": QUESTION, "answer": ANSWER}, haystacks)


async def test_a_question_after_the_period_is_refused(stack: ReviewStack) -> None:
    patient = unique("patient")
    case_id, _ = await _answered_case(stack, patient)
    long_ago = datetime.now(UTC) - timedelta(days=stack.settings.follow_up_period_days + 1)
    await publish(stack.publisher, _report_ready(case_id, long_ago))
    async with stack.client(patient, "patient") as asker:

        async def refused() -> Any:
            answer = await asker.post(f"/v1/cases/{case_id}/follow-ups", json={"text": QUESTION})
            late = answer.json()["type"].endswith("follow-up-period-over")
            return answer if late else None

        late = await eventually(refused, timeout=30)
        assert late.status_code == 409 and "30 days" in late.json()["detail"]
