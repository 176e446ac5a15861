"""The patient's "who looked at my file" page in process, over a fake of intake, review and
reports: the three trails (the case and its records; the opinion and decline reasons; the
report) merged by time, and the page still whole when review or reports does not know the case
(or, review, its patient) yet."""

import asyncio
import html
import re
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from tests.support.web import in_process

CASE_ID = "0b6f1d3e-8c55-4d0e-9a43-7f3e2d1c0a99"
INTAKE, REVIEW, REPORTS = "intake.test", "review.test", "reports.test"


def entry(seq: int, at: str, role: str, action: str, kept_by: str) -> dict[str, Any]:
    return {
        "seq": seq,
        "kept_by": kept_by,
        "at": at,
        "role": role,
        "reader": f"r-{role}",
        "you": role == "patient",
        "action": action,
        "outcome": "allowed",
        "status": 200,
        "purpose": "own-case" if role == "patient" else "assigned-review",
        "text": "...",
    }


INTAKE_TRAIL = [
    entry(1, "2026-01-01T10:00:00Z", "patient", "case.submit", "intake"),
    entry(2, "2026-01-03T10:00:00Z", "patient", "case.read", "intake"),
]
REPORTS_TRAIL = [entry(1, "2026-01-02T10:00:00Z", "reviewer", "report.read", "reports")]
REVIEW_TRAIL = [
    entry(1, "2026-01-01T12:00:00Z", "reviewer", "opinion.create", "review"),
    entry(2, "2026-01-02T12:00:00Z", "reviewer", "opinion.read", "review"),
]


def services(
    reports_status: int, review_status: int, intake_status: int = 200
) -> Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]:
    kept = {
        INTAKE: (intake_status, INTAKE_TRAIL),
        REVIEW: (review_status, REVIEW_TRAIL),
        REPORTS: (reports_status, REPORTS_TRAIL),
    }

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path != f"/v1/cases/{CASE_ID}/access-log":
            return httpx.Response(404, json={"type": "https://avis.health/problems/not-found"})
        status, trail = kept[request.url.host]
        if request.url.host == INTAKE:
            await asyncio.sleep(0.05)  # intake answers last: its answer still decides
        if status != 200:
            return httpx.Response(status, json={"type": "about:blank"})
        return httpx.Response(200, json={"items": trail, "next_cursor": None})

    return answer


def browse(reports_status: int, review_status: int = 200, intake_status: int = 200) -> Any:
    """The patient-1's browser of the web app, over intake, review and reports' fakes."""
    return in_process(
        services(reports_status, review_status, intake_status),
        "patient-1",
        intake_url=f"http://{INTAKE}",
        review_url=f"http://{REVIEW}",
        reports_url=f"http://{REPORTS}",
    )


def said(page: httpx.Response) -> list[str]:
    """The page's rows: what was done, in order."""
    rows = re.findall(r"<tr>\s*<td>[^<]*</td>\s*<td>[^<]*</td>\s*<td>([^<]*)</td>", page.text)
    return [html.unescape(what.strip()) for what in rows]


async def test_the_reads_of_the_report_and_the_opinion_come_in_their_place() -> None:
    async with browse(200) as browser:
        page = await browser.get(f"/cases/{CASE_ID}/access")
    assert page.status_code == 200, page.text
    assert said(page) == [
        "sent the request",
        "wrote the specialist's opinion",
        "read the report",
        "read the specialist's opinion",
        "opened the request's status",
    ], page.text


async def test_a_case_without_a_report_shows_intakes_trail() -> None:
    async with browse(404, 404) as browser:
        page = await browser.get(f"/cases/{CASE_ID}/access")
    assert page.status_code == 200, page.text
    assert said(page) == ["sent the request", "opened the request's status"]


async def test_a_case_review_does_not_show_this_patient_leaves_reviews_part_out() -> None:
    async with browse(200, 404) as browser:
        page = await browser.get(f"/cases/{CASE_ID}/access")
    assert page.status_code == 200, page.text
    assert said(page) == ["sent the request", "read the report", "opened the request's status"]


async def test_intakes_refusal_decides_whatever_review_and_reports_answer() -> None:
    """The three trails are asked at once; intake's refusal is the page's, even when the others
    answered first or refused otherwise, and nothing of theirs is shown."""
    async with browse(403, 200, intake_status=404) as browser:
        page = await browser.get(f"/cases/{CASE_ID}/access")
    assert page.status_code == 404, page.text
    assert said(page) == []
    assert "specialist" not in page.text
