"""The second reader's pages in process, over a fake of review's API: the list of opinions to
read, a reading with the version and the comments, agreeing, commenting (an empty comment
refused in plain words), the first specialist's view of the comments, and the words of every
page in both languages."""

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from avis.shared.events import Language
from avis.web import texts
from tests.support.samples import OPINION
from tests.support.web import csrf_of, in_process

AID = "5d0c7f0e-1111-5222-8333-444455556666-0001"
COMMENTS = "The staging does not match the January CT report."


class FakeReview:
    """Review's second reading as the pages see it."""

    def __init__(self, second: str = "rev-cardio-1", first: str = "rev-cardio-2") -> None:
        self.second, self.first = second, first
        self.state = "reading"
        self.sent: list[tuple[str, Any]] = []
        self.comments: list[dict[str, Any]] = []
        self.rules: dict[str, Any] = {"specialties": ["oncology"], "urgencies": []}

    def reading(self, *, full: bool) -> dict[str, Any]:
        return {
            "assignment_id": AID,
            "case_id": "case-1",
            "reference": "AV-2026-000042",
            "specialty": "cardiology",
            "urgency": "routine",
            "first_reader_id": self.first,
            "second_reader_id": self.second,
            "reason": "coordinator_rule",
            "state": self.state,
            "version": 1,
            "requested_at": "2026-01-02T10:00:00Z",
            "comments": self.comments,
            "opinion": OPINION if full else None,
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        base = f"/v1/second-readings/{AID}"
        if path == "/v1/assignments":
            return httpx.Response(200, json={"items": [], "next_cursor": None})
        if path == "/v1/second-reading-rules":
            if method == "PUT":
                self.rules = json.loads(request.content)
                self.sent.append(("rules", self.rules))
            return httpx.Response(200, json=self.rules)
        if path == "/v1/second-readings":
            return httpx.Response(200, json={"items": [self.reading(full=False)]})
        if path == base:
            return httpx.Response(200, json=self.reading(full=True))
        if path == f"{base}/agreement" and method == "POST":
            self.sent.append(("agree", None))
            self.state = "agreed"
            return httpx.Response(200, json=self.reading(full=False))
        if path == f"{base}/comments" and method == "POST":
            body = json.loads(request.content)
            self.sent.append(("comment", body))
            self.state = "commented"
            self.comments.append(
                {"number": 1, "version": 1, "commented_at": "2026-01-02T11:00:00Z", **body}
            )
            return httpx.Response(201, json=self.reading(full=False))
        return httpx.Response(404, json={"type": "https://avis.health/problems/not-found"})


@pytest.fixture
def review() -> FakeReview:
    return FakeReview()


@pytest.fixture
async def browser(review: FakeReview) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(review, "rev-cardio-1", review_url="http://review") as client:
        yield client


async def test_the_second_reader_reads_comments_then_agrees(
    browser: httpx.AsyncClient, review: FakeReview
) -> None:
    queue = await browser.get("/review")
    assert 'href="/second-readings"' in queue.text, "the reviewer's home leads to the readings"
    listed = await browser.get("/second-readings")
    assert listed.status_code == 200 and f"/second-readings/{AID}" in listed.text
    page = await browser.get(f"/second-readings/{AID}")
    assert page.status_code == 200
    assert OPINION["summary_for_patient"] in page.text
    assert f"/second-readings/{AID}/agree" in page.text
    empty = await browser.post(
        f"/second-readings/{AID}/comment",
        data={"csrf": csrf_of(page), "text": "  "},
        follow_redirects=True,
    )
    assert "Write your comments" in empty.text and review.sent == []
    sent = await browser.post(
        f"/second-readings/{AID}/comment",
        data={"csrf": csrf_of(page), "text": COMMENTS},
        follow_redirects=True,
    )
    assert "sent to the first specialist" in sent.text
    assert review.sent == [("comment", {"text": COMMENTS})]
    assert COMMENTS in sent.text and f"/second-readings/{AID}/agree" not in sent.text
    review.state = "reading"
    again = await browser.get(f"/second-readings/{AID}")
    agreed = await browser.post(
        f"/second-readings/{AID}/agree", data={"csrf": csrf_of(again)}, follow_redirects=True
    )
    assert "the opinion is released" in agreed.text and review.sent[-1] == ("agree", None)


async def test_a_form_without_its_csrf_token_is_refused(
    browser: httpx.AsyncClient, review: FakeReview
) -> None:
    refused = await browser.post(f"/second-readings/{AID}/agree", data={})
    assert refused.status_code in (400, 403) and review.sent == []


async def test_the_first_specialist_reads_the_comments_and_is_sent_to_correct() -> None:
    review = FakeReview(second="rev-cardio-2", first="rev-cardio-1")
    review.state = "commented"
    review.comments = [
        {"number": 1, "version": 1, "commented_at": "2026-01-02T11:00:00Z", "text": COMMENTS}
    ]
    async with in_process(review, "rev-cardio-1", review_url="http://review") as browser:
        page = await browser.get(f"/second-readings/{AID}")
    assert COMMENTS in page.text and f'href="/review/{AID}"' in page.text
    assert f"/second-readings/{AID}/agree" not in page.text


async def test_the_coordinator_sets_the_specialties_and_urgencies_read_twice() -> None:
    review = FakeReview()
    async with in_process(review, "coordinator-1", review_url="http://review") as browser:
        page = await browser.get("/board/second-reading")
        assert page.status_code == 200
        assert re.search(r'value="oncology"\s+checked', page.text)
        saved = await browser.post(
            "/board/second-reading",
            data={
                "csrf": csrf_of(page),
                "specialty": ["cardiology", "astrology"],
                "urgency": ["urgent"],
            },
            follow_redirects=True,
        )
        assert "rules of the second reading are saved" in saved.text
        assert review.sent == [("rules", {"specialties": ["cardiology"], "urgencies": ["urgent"]})]
    async with in_process(review, "rev-cardio-1", review_url="http://review") as browser:
        assert (await browser.get("/board/second-reading")).status_code == 403


def test_every_key_of_the_second_readers_pages_has_its_text_in_both_languages() -> None:
    folder = Path(texts.__file__).parent / "templates"
    used = {"second.agreed", "second.commented", "second.comment_incomplete"}
    used.add("second.rules_saved")
    for name in (
        "specialist/second_reading.html",
        "specialist/second_readings.html",
        "specialist/workspace.html",
        "board/second_reading.html",
        "board/nav.html",
    ):
        used |= set(
            re.findall(r"""\bt\(\s*["']([a-z_.]*[a-z_])["']\s*[),]""", (folder / name).read_text())
        )
    used |= {f"second.state.{s}" for s in ("unmatched", "reading", "commented", "agreed")}
    for language in Language:
        missing = used - set(texts.keys(language))
        assert not missing, (language, sorted(missing))
