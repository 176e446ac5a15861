"""The translator's pages in process, over a fake of review's API: the queue, one translation with
its source text, taking it, writing the summary (an empty one refused in plain words), writing the
opinion back, a form without its CSRF token refused, another role refused, and the words of every
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

TID = "5d0c7f0e-1111-5222-8333-444455556666-0001-t1"
SUMMARY_FR = "Douleurs articulaires des deux mains depuis janvier."
SUMMARY_EN = "Joint pain in both hands since the winter."


class FakeReview:
    """Review's translations as the pages see them."""

    def __init__(self, way: str = "to_specialist") -> None:
        self.way = way
        self.state = "queued"
        self.sent: list[tuple[str, Any]] = []

    def item(self, *, full: bool) -> dict[str, Any]:
        source = {"summary": SUMMARY_FR} if self.way == "to_specialist" else {"opinion": OPINION}
        return {
            "id": TID,
            "assignment_id": TID[:-3],
            "case_id": "case-1",
            "reference": "AV-2026-000042",
            "way": self.way,
            "state": self.state,
            "from_language": "fr" if self.way == "to_specialist" else "en",
            "to_language": "en" if self.way == "to_specialist" else "fr",
            "translator_id": "translator-1",
            "queued_at": "2026-01-02T10:00:00Z",
            "due_at": "2026-01-04T10:00:00Z",
            "source": source if full else None,
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        base = f"/v1/translations/{TID}"
        if path == "/v1/translations":
            return httpx.Response(200, json={"items": [self.item(full=False)]})
        if path == base:
            return httpx.Response(200, json=self.item(full=True))
        if path == f"{base}/take" and method == "POST":
            self.sent.append(("take", None))
            self.state = "taken"
            return httpx.Response(200, json=self.item(full=False))
        if path == f"{base}/text" and method == "PUT":
            self.sent.append(("text", json.loads(request.content)))
            self.state = "done"
            return httpx.Response(200, json=self.item(full=False))
        return httpx.Response(404, json={"type": "https://avis.health/problems/not-found"})


@pytest.fixture
def review() -> FakeReview:
    return FakeReview()


@pytest.fixture
async def browser(review: FakeReview) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(review, "translator-1", review_url="http://review") as client:
        yield client


async def test_the_translator_takes_and_translates_the_summary(
    browser: httpx.AsyncClient, review: FakeReview
) -> None:
    home = await browser.get("/", follow_redirects=True)
    assert home.status_code == 200 and f"/translations/{TID}" in home.text, "home: the queue"
    page = await browser.get(f"/translations/{TID}")
    assert page.status_code == 200 and SUMMARY_FR in page.text
    assert f"/translations/{TID}/take" in page.text and 'name="summary"' not in page.text
    assert "<script>" not in page.text.split("</head>", 1)[1], "no inline script"
    taken = await browser.post(
        f"/translations/{TID}/take", data={"csrf": csrf_of(page)}, follow_redirects=True
    )
    assert "yours to write" in taken.text and 'name="summary"' in taken.text
    empty = await browser.post(
        f"/translations/{TID}/text",
        data={"csrf": csrf_of(taken), "way": "to_specialist", "summary": "  "},
        follow_redirects=True,
    )
    assert "Fill in every field" in empty.text and review.sent == [("take", None)]
    done = await browser.post(
        f"/translations/{TID}/text",
        data={"csrf": csrf_of(taken), "way": "to_specialist", "summary": SUMMARY_EN},
        follow_redirects=True,
    )
    assert "translation was submitted" in done.text
    assert review.sent[-1] == ("text", {"summary": SUMMARY_EN})


async def test_the_translator_writes_the_opinion_back() -> None:
    review = FakeReview(way="to_patient")
    review.state = "taken"
    async with in_process(review, "translator-1", review_url="http://review") as browser:
        page = await browser.get(f"/translations/{TID}")
        assert OPINION["summary_for_patient"] in page.text
        fields = {name: f"{name} en français" for name in OPINION if name != "diagnosis"}
        done = await browser.post(
            f"/translations/{TID}/text",
            data={
                "csrf": csrf_of(page),
                "way": "to_patient",
                "assessment": "confirmed",
                "explanation": "Les signes concordent.",
                **fields,
            },
            follow_redirects=True,
        )
    assert "translation was submitted" in done.text
    (_, body), *_ = [s for s in review.sent if s[0] == "text"]
    assert body["opinion"]["diagnosis"] == {
        "assessment": "confirmed",
        "explanation": "Les signes concordent.",
    }
    assert body["opinion"]["risk_benefit"] == "risk_benefit en français"


async def test_a_form_without_its_csrf_token_is_refused(
    browser: httpx.AsyncClient, review: FakeReview
) -> None:
    refused = await browser.post(f"/translations/{TID}/take", data={})
    assert refused.status_code in (400, 403) and review.sent == []


async def test_another_role_is_refused_the_translators_pages(review: FakeReview) -> None:
    async with in_process(review, "rev-cardio-1", review_url="http://review") as browser:
        assert (await browser.get("/translations")).status_code == 403


def test_every_key_of_the_translators_pages_has_its_text_in_both_languages() -> None:
    folder = Path(texts.__file__).parent / "templates"
    used = {"translation.taken", "translation.done", "translation.incomplete", "role.translator"}
    for name in ("translator/queue.html", "translator/workspace.html"):
        used |= set(
            re.findall(r"""\bt\(\s*["']([a-z_.]*[a-z_])["']\s*[),]""", (folder / name).read_text())
        )
    used |= {f"translation.state.{s}" for s in ("queued", "taken", "done")}
    used |= {f"translation.way.{w}" for w in ("to_specialist", "to_patient")}
    for language in Language:
        missing = used - set(texts.keys(language))
        assert not missing, (language, sorted(missing))
