"""The specialist's workspace in process, over a fake of review's and intake's APIs: the queue's
due dates in words, the three panes, a record served under a sandbox, DICOM facts without the
patient's tags, the draft kept across a reload, and the opinion sent once."""

import json
import re
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from avis.web import rules
from avis.web.dicom import Unreadable, technical_facts
from avis.web.models import OpinionForm
from avis.web.store import OpinionDrafts
from tests.support.samples import OPINION, pdf, png
from tests.support.specialist import PATIENT_ID, PATIENT_NAME, dicom, pdf_page
from tests.support.web import csrf_of, in_process

CASE_ID = "0b6f1d3e-8c55-4d0e-9a43-7f3e2d1c0a99"
AID = "5d0c7f0e-1111-5222-8333-444455556666-0001"
PDF_ID, PNG_ID, DCM_ID = ("a" * 64, "b" * 64, "c" * 64)
FILES = {
    PDF_ID: ("application/pdf", pdf_page("Resting ECG")),
    PNG_ID: ("image/png", png("x")),
    DCM_ID: ("application/dicom", dicom("x")),
}


def assignment(status: str, due_in: timedelta, **extra: Any) -> dict[str, Any]:
    at = datetime.now(UTC)
    return {
        "id": AID,
        "case_id": CASE_ID,
        "reference": "AV-2026-000042",
        "round": 1,
        "reviewer_id": "rev-cardio-1",
        "status": status,
        "specialty": "cardiology",
        "urgency": "routine",
        "language": "en",
        "assigned_at": at.isoformat(),
        "due_at": (at + due_in).isoformat(),
        "overdue": due_in < timedelta(0),
        "case_url": "http://intake/v1/cases/x",
        **extra,
    }


class FakeServices:
    """Review and intake as the workspace sees them."""

    def __init__(self) -> None:
        self.status = "assigned"
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.files = dict(FILES)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if request.url.host == "review":
            return self.review(method, path, request)
        if path == f"/v1/cases/{CASE_ID}/clinical":
            docs = [
                {"document_id": i, "kind": "test_result", "content_type": t, "size": len(d)}
                | {"sha256": i, "filename": f"file-{i[0]}", "uploaded_at": "2026-01-01T10:00:00Z"}
                for i, (t, d) in self.files.items()
            ]
            return httpx.Response(200, json=self.clinical(docs))
        for document_id, (kind, data) in self.files.items():
            if path == f"/v1/cases/{CASE_ID}/documents/{document_id}":
                return httpx.Response(200, content=data, headers={"content-type": kind})
        return httpx.Response(404, json={"type": "https://avis.health/problems/not-found"})

    def clinical(self, docs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "case_id": CASE_ID,
            "reference": "AV-2026-000042",
            "specialty": "cardiology",
            "urgency": "routine",
            "language": "en",
            "questions": ["further_tests"],
            "clinical_summary": "Breathless on stairs.",
            "age_years": 54,
            "physician": {"name": "Dr Bernard", "institution_code": None},
            "patient": None,
            "documents": docs,
        }

    def review(self, method: str, path: str, request: httpx.Request) -> httpx.Response:
        if path == "/v1/assignments":
            items = [assignment(self.status, timedelta(hours=5))]
            items.append(assignment("assigned", timedelta(hours=-2), id="other-0001"))
            items.append(assignment("accepted", timedelta(days=3), id="later-0001"))
            # Review's filter and order, as review applies them: any of the statuses asked
            # for, soonest due first.
            wanted = request.url.params.get_list("status")
            items = sorted(
                (i for i in items if not wanted or i["status"] in wanted),
                key=lambda i: (i["due_at"], i["id"]),
            )
            return httpx.Response(200, json={"items": items, "next_cursor": None})
        if path == f"/v1/assignments/{AID}" and method == "GET":
            return httpx.Response(200, json=assignment(self.status, timedelta(hours=5)))
        if path == f"/v1/assignments/{AID}/accept":
            self.status = "accepted"
            return httpx.Response(200, json=assignment(self.status, timedelta(hours=5)))
        if path == f"/v1/assignments/{AID}/information-requests" and method == "POST":
            self.sent.append((method, json.loads(request.content)))
            return httpx.Response(201, json=assignment(self.status, timedelta(hours=5)))
        if path == f"/v1/assignments/{AID}/opinion" and method in ("POST", "PUT"):
            self.sent.append((method, json.loads(request.content)))
            self.status = "completed"
            return httpx.Response(201, json=self.version())
        if path == f"/v1/assignments/{AID}/opinion":
            return httpx.Response(200, json=self.version())
        problem = {"type": "https://avis.health/problems/not-your-assignment", "status": 403}
        return httpx.Response(
            403, content=json.dumps(problem), headers={"content-type": "application/problem+json"}
        )

    def version(self) -> dict[str, Any]:
        return {
            "assignment_id": AID,
            "case_id": CASE_ID,
            "reviewer_id": "rev-cardio-1",
            "version": len(self.sent),
            "completed_at": "2026-01-02T10:00:00Z",
            "opinion": self.sent[-1][1],
        }


@pytest.fixture
def services() -> FakeServices:
    return FakeServices()


@pytest.fixture
async def browser(services: FakeServices) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(
        services, "rev-cardio-1", intake_url="http://intake", review_url="http://review"
    ) as client:
        yield client


def opinion_form(csrf: str) -> dict[str, str]:
    diagnosis = OPINION["diagnosis"]
    assert isinstance(diagnosis, dict)
    sections = {k: v for k, v in OPINION.items() if isinstance(v, str)}
    return {"csrf": csrf, **diagnosis, **sections}


async def test_the_queue_says_each_due_date_in_words(browser: httpx.AsyncClient) -> None:
    home = await browser.get("/cases", follow_redirects=True)
    assert str(home.url).endswith("/review")
    assert "My review queue" in home.text
    for words in ("Overdue", "Due within a day", "On time"):
        assert words in home.text
    # The open ones soonest due first, as review lists them.
    assert home.text.index("due-overdue") < home.text.index("due-soon")


async def test_accept_then_three_panes_a_sandboxed_record_and_dicom_facts(
    browser: httpx.AsyncClient,
) -> None:
    page = await browser.get(f"/review/{AID}")
    assert "Accept this case" in page.text and "Breathless on stairs." in page.text
    assert "frame-src 'self'" in page.headers["content-security-policy"]
    refused = await browser.get(f"/review/{AID}/records/{PDF_ID}")
    assert refused.status_code == 409  # not accepted yet: no records
    accepted = await browser.post(
        f"/review/{AID}/accept", data={"csrf": csrf_of(page)}, follow_redirects=True
    )
    assert "You accepted this case" in accepted.text
    assert "Your opinion" in accepted.text and "View file-a" in accepted.text

    record = await browser.get(f"/review/{AID}/records/{PDF_ID}")
    assert record.status_code == 200 and record.content.startswith(b"%PDF")
    assert record.headers["content-security-policy"].startswith("sandbox")
    assert record.headers["x-content-type-options"] == "nosniff"
    assert record.headers["content-disposition"] == f'inline; filename="record-{"a" * 12}.pdf"'
    assert record.headers["cache-control"] == "no-store"
    saved = await browser.get(f"/review/{AID}/records/{PDF_ID}?download=true")
    assert saved.headers["content-disposition"].startswith("attachment;")
    assert saved.headers["content-security-policy"].startswith("sandbox")
    viewer = await browser.get(f"/review/{AID}/viewer/{PDF_ID}", headers={"HX-Request": "true"})
    assert "<iframe" not in viewer.text  # Chromium shows no PDF in a sandboxed frame
    first = f"/review/{AID}/records/{PDF_ID}/pages/1"
    assert f'<a href="{first}"><img class="record-page" src="{first}" width="1190"' in viewer.text
    assert (
        'alt="Page 1 of 1 (opens at full size)"' in viewer.text and "?download=true" in viewer.text
    )
    drawn = await browser.get(first)
    assert drawn.status_code == 200 and drawn.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert drawn.headers["content-type"] == "image/png"
    assert drawn.headers["content-security-policy"].startswith("sandbox")
    assert drawn.headers["cache-control"] == "no-store"
    assert struct.unpack(">II", drawn.content[16:24]) == (1190, 1684)
    beyond = await browser.get(f"/review/{AID}/records/{PDF_ID}/pages/2")
    assert beyond.status_code == 404 and "not shown here" in beyond.text
    not_pdf = await browser.get(f"/review/{AID}/records/{PNG_ID}/pages/1")
    assert not_pdf.status_code == 404
    image = await browser.get(f"/review/{AID}/viewer/{PNG_ID}", headers={"HX-Request": "true"})
    assert f'<img class="record-image" src="/review/{AID}/records/{PNG_ID}"' in image.text

    dcm = await browser.get(f"/review/{AID}?record={DCM_ID}")
    assert "Technical details of this DICOM file" in dcm.text
    assert "MONOCHROME2" in dcm.text and "Explicit VR Little Endian" in dcm.text
    for secret in ("Dupré", "Éloïse", PATIENT_ID, "Saint-Secret", "Hidden", "1971"):
        assert secret not in dcm.text
    never = await browser.get(f"/review/{AID}/records/{DCM_ID}")
    assert never.status_code == 404 and "DICM" not in never.text


async def test_a_draft_survives_a_reload_and_the_opinion_is_sent_once(
    browser: httpx.AsyncClient, services: FakeServices
) -> None:
    services.status = "accepted"
    page = await browser.get(f"/review/{AID}")
    saved = await browser.post(
        f"/review/{AID}/draft",
        data={"csrf": csrf_of(page), "explanation": "Half a thought"},
        headers={"HX-Request": "true"},
    )
    assert saved.status_code == 200 and "Draft kept at" in saved.text
    again = await browser.get(f"/review/{AID}")
    assert "Half a thought" in again.text and "A draft of this opinion is kept" in again.text

    incomplete = await browser.post(
        f"/review/{AID}/opinion", data={"csrf": csrf_of(again), "explanation": "More"}
    )
    assert incomplete.status_code == 422 and "This section is needed." in incomplete.text
    assert services.sent == []

    sent = await browser.post(
        f"/review/{AID}/opinion", data=opinion_form(csrf_of(again)), follow_redirects=True
    )
    assert "Your opinion has been sent" in sent.text
    assert [m for m, _ in services.sent] == ["POST"]
    assert services.sent[0][1]["diagnosis"] == OPINION["diagnosis"]
    # Completed: the form becomes a correction, filled with the version sent.
    assert "Version 1 of your opinion" in sent.text
    assert "/correction" in sent.text and OPINION["further_tests"] in sent.text
    corrected = await browser.post(
        f"/review/{AID}/correction",
        data=opinion_form(csrf_of(sent)) | {"further_tests": "PET-CT and a stress test."},
        follow_redirects=True,
    )
    assert "sent as a new version" in corrected.text
    assert [m for m, _ in services.sent] == ["POST", "PUT"]


async def test_the_specialist_asks_the_patient_for_more_information(
    browser: httpx.AsyncClient, services: FakeServices
) -> None:
    services.status = "accepted"
    page = await browser.get(f"/review/{AID}")
    assert f"/review/{AID}/ask" in page.text
    empty = await browser.post(
        f"/review/{AID}/ask", data={"csrf": csrf_of(page), "text": "  "}, follow_redirects=True
    )
    assert "Say what you need" in empty.text and services.sent == []
    asked = await browser.post(
        f"/review/{AID}/ask",
        data={"csrf": csrf_of(page), "text": "The 2024 operative report, please."},
        follow_redirects=True,
    )
    assert "The review waits for the answer" in asked.text
    assert services.sent == [("POST", {"text": "The 2024 operative report, please."})]


TID = f"{AID}-t1"
SUMMARY_FR = "Essoufflement à l'effort depuis janvier."
SUMMARY_EN = "Short of breath on effort since January."


class InternationalServices(FakeServices):
    """An international round: the case in French, translated for an English-reading specialist
    (review refuses the translation's text and the acceptance until it is done)."""

    def __init__(self) -> None:
        super().__init__()
        self.translation = "taken"
        self.reads = 0

    def clinical(self, docs: list[dict[str, Any]]) -> dict[str, Any]:
        return super().clinical(docs) | {"language": "fr", "clinical_summary": SUMMARY_FR}

    def review(self, method: str, path: str, request: httpx.Request) -> httpx.Response:
        done = self.translation == "done"
        if path == f"/v1/translations/{TID}" and method == "GET":
            self.reads += 1
            if not done:
                return problem(403, "not-your-translation")
            return httpx.Response(200, json=self.translated())
        if path == f"/v1/assignments/{AID}/accept" and not done:
            return problem(409, "translation-pending")
        answer = super().review(method, path, request)
        if path == f"/v1/assignments/{AID}" and method == "GET":
            step = {"id": TID, "way": "to_specialist", "state": self.translation}
            step |= {"from_language": "fr", "to_language": "en"}
            shown = {"language": "fr", "translations": [step]}
            return httpx.Response(200, json=json.loads(answer.content) | shown)
        return answer

    def translated(self) -> dict[str, Any]:
        return {
            "id": TID,
            "assignment_id": AID,
            "case_id": CASE_ID,
            "reference": "AV-2026-000042",
            "way": "to_specialist",
            "state": "done",
            "from_language": "fr",
            "to_language": "en",
            "translator_id": "translator-1",
            "translator_display_name": "Tom Translator",
            "queued_at": "2026-01-02T10:00:00Z",
            "due_at": "2026-01-04T10:00:00Z",
            "done_at": "2026-01-03T10:00:00Z",
            "translated": {"summary": SUMMARY_EN},
        }


def problem(status: int, slug: str) -> httpx.Response:
    body = {"type": f"https://avis.health/problems/{slug}", "status": status}
    return httpx.Response(
        status, content=json.dumps(body), headers={"content-type": "application/problem+json"}
    )


async def test_an_international_round_waits_for_its_translation_then_shows_it() -> None:
    services = InternationalServices()
    async with in_process(
        services, "rev-cardio-1", intake_url="http://intake", review_url="http://review"
    ) as browser:
        waiting = await browser.get(f"/review/{AID}")
        assert waiting.status_code == 200, waiting.text
        assert "This case is being translated into your language" in waiting.text
        assert f"/review/{AID}/accept" not in waiting.text, "no accept while it is translated"
        assert f"/review/{AID}/decline" in waiting.text, "declining stays open"
        assert 'lang="fr">Essoufflement' in waiting.text and services.reads == 0
        french = await browser.get(f"/review/{AID}", headers={"Accept-Language": "fr"})
        assert "Ce dossier est en cours de traduction dans votre langue" in french.text
        # A page opened before (or another tab): review's 409 said in plain words.
        refused = await browser.post(
            f"/review/{AID}/accept", data={"csrf": csrf_of(waiting)}, follow_redirects=True
        )
        assert "still being translated into your language" in refused.text
        assert services.status == "assigned"

        services.translation = "done"
        ready = await browser.get(f"/review/{AID}")
        assert services.reads == 1, "the translation read once, with the reviewer's token"
        summary = ready.text.split('id="summary"', 1)[1].split("</section>", 1)[0]
        assert "Translated from Français by Tom Translator." in summary
        assert f'lang="en">{SUMMARY_EN}</p>' in summary
        assert summary.index(SUMMARY_EN) < summary.index("Essoufflement")
        assert "As the patient wrote it (Français)" in summary
        assert f"/review/{AID}/accept" in ready.text
        french = await browser.get(f"/review/{AID}", headers={"Accept-Language": "fr"})
        assert "Traduction de Tom Translator, depuis : Français." in french.text
        accepted = await browser.post(
            f"/review/{AID}/accept", data={"csrf": csrf_of(ready)}, follow_redirects=True
        )
        assert "You accepted this case" in accepted.text and SUMMARY_EN in accepted.text


async def test_another_reviewers_case_is_refused_in_plain_words(
    browser: httpx.AsyncClient,
) -> None:
    for path in ("/review/other-0001", f"/review/other-0001/records/{PDF_ID}"):
        page = await browser.get(path)
        assert page.status_code == 403, path
        assert "given to another specialist" in page.text
        assert "problems" not in page.text


def test_dicom_facts_come_from_an_allow_list() -> None:
    facts = dict(technical_facts(dicom("tag")))
    assert facts["modality"] == "CT" and facts["rows"] == "2" and facts["columns"] == "3"
    assert facts["pixel_spacing"] == "0.5 \u00d7 0.5"
    assert set(facts) <= {key for key, _ in rules_keys()}
    shown = " ".join(facts.values())
    for secret in (PATIENT_NAME, PATIENT_ID, "Saint-Secret", "20260312"):
        assert secret not in shown
    # Cut short: what was read before the cut is still given.
    assert dict(technical_facts(dicom("tag")[:400])).get("modality") == "CT"
    with pytest.raises(Unreadable):
        technical_facts(pdf("not dicom"))


def rules_keys() -> list[tuple[str, str]]:
    from avis.web.dicom import TECHNICAL

    return list(TECHNICAL.values())


def test_due_dates_read_overdue_soon_or_later() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert rules.due_state("accepted", at - timedelta(minutes=1), False, at) == "overdue"
    assert rules.due_state("assigned", at + timedelta(hours=3), True, at) == "overdue"
    assert rules.due_state("assigned", at + timedelta(hours=23), False, at) == "soon"
    assert rules.due_state("accepted", at + timedelta(days=2), False, at) == "later"
    assert rules.due_state("completed", at - timedelta(days=2), True, at) is None


def test_drafts_are_kept_per_person_and_case_and_forgotten_when_idle() -> None:
    clock = [0.0]
    drafts = OpinionDrafts(idle_seconds=60, max_drafts=2, clock=lambda: clock[0])
    drafts.put("rev-1", "case-1", OpinionForm(explanation="one"))
    assert drafts.get("rev-2", "case-1") is None
    assert drafts.get("rev-1", "case-1") == OpinionForm(explanation="one")
    drafts.put("rev-1", "case-2", OpinionForm())
    drafts.put("rev-1", "case-3", OpinionForm())
    assert drafts.get("rev-1", "case-1") is None and len(drafts) == 2  # the oldest went
    clock[0] = 61
    assert drafts.get("rev-1", "case-3") is None


def test_every_key_of_the_workspace_has_its_text_in_both_languages() -> None:
    from pathlib import Path

    from avis.shared.events import Language
    from avis.web import texts
    from avis.web.dicom import TECHNICAL
    from avis.web.models import ASSESSMENTS, DECLINE_REASONS, OPINION_SECTIONS

    folder = Path(texts.__file__).parent / "templates" / "specialist"
    used = {"review.accepted", "review.declined", "review.decline_incomplete", "review.sent"}
    used |= {"review.asked", "review.ask_incomplete"}
    used |= {"review.corrected", "review.draft_saved", "review.required"}
    used |= set(rules.PROBLEM_MESSAGES.values())
    for template in folder.glob("*.html"):
        used |= set(
            re.findall(r"""\bt\(\s*["']([a-z_.]*[a-z_])["']\s*[),]""", template.read_text())
        )
    for prefix, names in (
        ("review.status.", ("assigned", "accepted", "declined", "completed", "cancelled")),
        ("review.due.", ("overdue", "soon", "later")),
        ("review.reason.", DECLINE_REASONS),
        ("review.assessment.", ASSESSMENTS),
        ("review.section.", OPINION_SECTIONS),
        ("review.section_hint.", OPINION_SECTIONS),
        ("review.dicom.", [key for key, _ in TECHNICAL.values()]),
    ):
        used |= {prefix + name for name in names}
    for language in Language:
        missing = used - set(texts.keys(language))
        assert not missing, (language, sorted(missing))


async def test_a_malformed_pdf_is_said_in_plain_words_never_a_500(
    browser: httpx.AsyncClient, services: FakeServices
) -> None:
    services.status = "accepted"
    services.files[PDF_ID] = ("application/pdf", pdf("damaged"))
    page = await browser.get(f"/review/{AID}?record={PDF_ID}")
    assert page.status_code == 200
    assert "This PDF could not be read" in page.text and "?download=true" in page.text
    drawn = await browser.get(f"/review/{AID}/records/{PDF_ID}/pages/1")
    assert drawn.status_code == 422 and "This PDF could not be read" in drawn.text
    assert "Traceback" not in drawn.text and "problem" not in drawn.text
    too_far = await browser.get(f"/review/{AID}/records/{PDF_ID}/pages/51")
    assert too_far.status_code == 422  # past the page limit: refused before any download
