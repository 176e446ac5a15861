"""Follow-up questions on web, over fakes of the services: the patient reads the report's
addendum and asks a follow-up question from the case's page (refusals in plain words); the
specialist lists the questions waiting for them, reads one and answers it."""

import json
from typing import Any

import httpx

from tests.support.web import csrf_of, in_process

CASE_ID = "0b6f1d3e-8c55-4d0e-9a43-7f3e2d1c0a99"
FOLLOW_UP = f"{CASE_ID}-r01-f01"
QUESTION = "May I cycle before the operation?"
ANSWER = "Yes, gently, stopping at the least breathlessness."
CASE = {
    "case_id": CASE_ID,
    "reference": "AV-2026-000001",
    "status": "report_ready",
    "specialty": "cardiology",
    "urgency": "routine",
    "created_at": "2026-01-01T10:00:00Z",
    "updated_at": "2026-01-01T10:00:00Z",
    "questions": ["further_tests"],
    "documents": [],
    "timeline": [
        {"id": "e1", "kind": "report_ready", "status": "report_ready", "at": "2026-01-09T10:00:00Z"}
    ],
}
REPORT = {
    "version": 2,
    "language": "en",
    "title": "Medical feedback report",
    "subtitle": "Second opinion",
    "correction_note": "This version adds to version 1 the specialist's answers.",
    "issued_at": "2026-01-10T10:00:00Z",
    "sections": [],
    "reviewer": {"heading": "Opinion given by", "name": "Dr Fontaine", "specialty_text": "x"},
    "disclaimer": {"heading": "Note", "text": "Not a consultation."},
    "addenda": [
        {
            "heading": "Addendum 1: a follow-up question",
            "question_label": "Your question",
            "question": QUESTION,
            "answer_label": "The specialist's answer",
            "answer": ANSWER,
            "signature": "Answered by Dr Fontaine on 10 January 2026",
        }
    ],
}


def follow_up(**extra: Any) -> dict[str, Any]:
    return {
        "id": FOLLOW_UP,
        "case_id": CASE_ID,
        "assignment_id": f"{CASE_ID}-r01",
        "reviewer_id": "rev-cardio-1",
        "number": 1,
        "state": "open",
        "asked_at": "2026-01-10T10:00:00Z",
        "due_at": "2026-01-17T10:00:00Z",
        "overdue": False,
    } | extra


def problem(status: int, slug: str) -> httpx.Response:
    body = json.dumps({"type": f"https://avis.health/problems/{slug}", "status": status})
    return httpx.Response(
        status, content=body, headers={"content-type": "application/problem+json"}
    )


async def test_the_patient_reads_the_addendum_and_asks_a_follow_up_question() -> None:
    asked: list[dict[str, str]] = []

    def services(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == f"/v1/cases/{CASE_ID}":
            return httpx.Response(200, json=CASE)
        if path == f"/v1/cases/{CASE_ID}/report":
            return httpx.Response(200, json=REPORT)
        if request.url.host == "review" and path == f"/v1/cases/{CASE_ID}/follow-ups":
            asked.append(json.loads(request.content))
            if len(asked) > 1:
                return problem(409, "follow-up-limit")
            return httpx.Response(201, json=follow_up())
        return problem(404, "not-found")

    async with in_process(
        services, "patient-1", intake_url="http://intake", review_url="http://review"
    ) as browser:
        page = await browser.get(f"/cases/{CASE_ID}")
        assert "Addendum 1: a follow-up question" in page.text
        assert QUESTION in page.text and ANSWER in page.text
        assert f'action="/cases/{CASE_ID}/follow-ups"' in page.text
        url = f"/cases/{CASE_ID}/follow-ups"
        empty = await browser.post(
            url, data={"csrf": csrf_of(page), "text": " "}, follow_redirects=True
        )
        assert "Write your question before sending it." in empty.text and asked == []
        sent = await browser.post(
            url, data={"csrf": csrf_of(page), "text": QUESTION}, follow_redirects=True
        )
        assert "Your question was sent to the specialist." in sent.text
        refused = await browser.post(
            url, data={"csrf": csrf_of(sent), "text": QUESTION}, follow_redirects=True
        )
        assert "You have already asked your three follow-up questions" in refused.text
    assert asked == [{"text": QUESTION}, {"text": QUESTION}]


async def test_the_specialist_reads_and_answers_a_follow_up_question() -> None:
    answers: list[dict[str, str]] = []

    def services(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/follow-ups":
            assert request.url.params["state"] == "open"
            return httpx.Response(200, json={"items": [follow_up()], "next_cursor": None})
        if path == f"/v1/follow-ups/{FOLLOW_UP}":
            return httpx.Response(200, json=follow_up(question=QUESTION))
        if path == f"/v1/follow-ups/{FOLLOW_UP}/answer":
            answers.append(json.loads(request.content))
            return httpx.Response(200, json=follow_up(state="answered", answer=ANSWER))
        return problem(404, "not-found")

    async with in_process(
        services, "rev-cardio-1", intake_url="http://intake", review_url="http://review"
    ) as browser:
        listed = await browser.get("/follow-ups")
        assert listed.status_code == 200 and "Follow-up question 1" in listed.text
        assert "2026-01-17" in listed.text and f"/follow-ups/{FOLLOW_UP}" in listed.text
        page = await browser.get(f"/follow-ups/{FOLLOW_UP}")
        assert QUESTION in page.text and "Your answer is due by 2026-01-17." in page.text
        url = f"/follow-ups/{FOLLOW_UP}/answer"
        empty = await browser.post(
            url, data={"csrf": csrf_of(page), "text": ""}, follow_redirects=True
        )
        assert "Write your answer before sending it." in empty.text and answers == []
        sent = await browser.post(
            url, data={"csrf": csrf_of(page), "text": ANSWER}, follow_redirects=True
        )
        assert "Your answer was sent" in sent.text
    assert answers == [{"text": ANSWER}]


async def test_a_patient_does_not_see_the_specialists_follow_up_pages() -> None:
    def services(request: httpx.Request) -> httpx.Response:
        return problem(404, "not-found")

    async with in_process(services, "patient-1", review_url="http://review") as browser:
        refused = await browser.get("/follow-ups")
        assert refused.status_code == 403
