"""The patient's journey through the web pages, over HTTP, against the four services and web as
processes on the test stack: sign in, write a request step by step, add two records (and see a
refused one said in plain words), consent, submit, follow the timeline, read the report and
download its PDF; a form without its CSRF token and another patient's case are refused."""

import asyncio
import re

import pytest

from tests.support.basics import unique
from tests.support.samples import OPINION, case_body, pdf, png
from tests.support.stack import ServiceStack
from tests.support.web import Browser, browsing, reviewer_writes_the_opinion

pytestmark = pytest.mark.infra


@pytest.fixture
def stack(web_services: ServiceStack) -> ServiceStack:
    return web_services


def case_id_of(url: str) -> str:
    found = re.search(r"/cases/([0-9a-f-]{36})$", url)
    assert found, url
    return found.group(1)


async def file_a_request(browser: Browser, name: str) -> str:
    """Write the request in its four steps; the case's id once filed."""
    page = await browser.get("/cases/new")
    assert "Step 1 of 4" in page.text
    page = await browser.submit(
        "/cases/new/specialty", {"specialty": "cardiology", "urgency": "routine"}
    )
    assert "Step 2 of 4" in page.text, page.text
    page = await browser.submit(
        "/cases/new/questions", {"questions": ["diagnosis_clarification", "further_tests"]}
    )
    assert "Step 3 of 4" in page.text
    page = await browser.submit("/cases/new/summary", {"clinical_summary": "Chest pain on effort."})
    assert "Step 4 of 4" in page.text
    page = await browser.submit(
        "/cases/new/people",
        {
            "given_name": "Ada",
            "family_name": name,
            "birth_date": "1970-05-04",
            "email": f"{name.lower()}@example.org",
            "preferred_language": "en",
            "physician_name": "Dr Bernard",
            "institution_code": "750712184",
        },
    )
    assert page.status_code == 200, page.text
    assert "saved as a draft" in page.text
    return case_id_of(str(page.url))


async def test_a_patient_files_a_case_with_two_records_and_follows_it(stack: ServiceStack) -> None:
    async with browsing(stack, "en-GB,en;q=0.9") as browser:
        signed = await browser.sign_in()
        assert signed.status_code == 200 and "My requests" in signed.text
        assert signed.headers["cache-control"] == "no-store"
        case_id = await file_a_request(browser, unique("Martin"))

        # A missing step sends the person back to it.
        page = await browser.get("/cases/new?step=people")
        assert "Step 1 of 4" in page.text

        page = await browser.get(f"/cases/{case_id}")
        page = await browser.submit(
            f"/cases/{case_id}/documents",
            {"kind": "test_result"},
            files=[
                ("files", ("ecg.pdf", pdf(unique("ecg")), "application/pdf")),
                ("files", ("scan.png", png(unique("scan")), "image/png")),
            ],
        )
        assert page.text.count("A record was added.") == 2, page.text
        assert "ecg.pdf" in page.text and "scan.png" in page.text

        refused = await browser.submit(
            f"/cases/{case_id}/documents",
            {"kind": "other"},
            files=[("files", ("run.exe", b"MZ\x90\x00not a record", "application/octet-stream"))],
        )
        assert "This kind of file is not accepted" in refused.text
        assert "avis.health/problems" not in refused.text

        # Submitting without the consent box ticked is refused in words.
        page = await browser.submit(
            f"/cases/{case_id}/submit", {"consent_version": "consent-2026-01"}
        )
        assert "tick the consent box" in page.text
        page = await browser.submit(
            f"/cases/{case_id}/submit", {"consent": "yes", "consent_version": "consent-2026-01"}
        )
        assert "Your request has been sent" in page.text
        assert "Request sent" in page.text

        # The timeline, as the page's live update asks for it, moves to the specialist.
        async def assigned() -> bool:
            fragment = await browser.http.get(
                f"/cases/{case_id}/timeline", headers={"HX-Request": "true"}
            )
            return "Given to a specialist" in fragment.text

        for _ in range(100):
            if await assigned():
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"no assignment on the timeline\n{stack.tails()}")

        await reviewer_writes_the_opinion(stack, case_id, OPINION)
        for _ in range(120):
            page = await browser.get(f"/cases/{case_id}")
            if "Download the report (PDF)" in page.text:
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"no report on the page\n{stack.tails()}")
        assert OPINION["summary_for_patient"] in page.text
        report = await browser.http.get(f"/cases/{case_id}/report.pdf")
        assert report.status_code == 200
        assert report.headers["content-type"] == "application/pdf"
        assert report.content.startswith(b"%PDF")
        assert "attachment" in report.headers["content-disposition"]

        # Asking for erasure: refused without the box ticked, then carried out at once (no
        # legal hold), on the timeline and for the coordinators.
        page = await browser.submit(f"/cases/{case_id}/erasure", {})
        assert "Tick the box to confirm your request for erasure." in page.text
        page = await browser.submit(f"/cases/{case_id}/erasure", {"confirm": "yes"})
        assert "Your request for erasure is recorded." in page.text
        assert "Erasure requested" in page.text and "Data erased" in page.text
        assert "data was erased on" in page.text and "nobody can open it" in page.text
        assert f'action="/cases/{case_id}/erasure"' not in page.text, "asked once"
        assert f'href="/cases/{case_id}/report.pdf"' not in page.text, "no report to open"
    async with browsing(stack, "en") as coordinator:
        await coordinator.sign_in("coordinator-1")
        board = await coordinator.get(f"/board/cases/{case_id}")
        assert "The patient asked for the data to be erased on" in board.text
        assert "data was erased on" in board.text and "Erase for good" not in board.text


async def test_a_form_without_its_csrf_token_is_refused(stack: ServiceStack) -> None:
    async with browsing(stack) as browser:
        await browser.sign_in()
        case_id = await file_a_request(browser, unique("Durand"))
        refused = await browser.http.post(f"/cases/{case_id}/withdraw", data={"confirm": "yes"})
        assert refused.status_code == 403
        assert "This form is out of date" in refused.text
        page = await browser.get(f"/cases/{case_id}")
        assert "Draft" in page.text  # nothing was withdrawn
        page = await browser.submit(f"/cases/{case_id}/withdraw", {"confirm": "yes"})
        assert "Your request has been withdrawn" in page.text


async def test_another_patients_case_is_refused(stack: ServiceStack) -> None:
    async with stack.client("intake", unique("patient"), "patient") as other:
        created = await other.post("/v1/cases", json=case_body())
        assert created.status_code == 201, created.text
        theirs = created.json()["case_id"]
    async with browsing(stack) as browser:
        await browser.sign_in()
        for path in (f"/cases/{theirs}", f"/cases/{theirs}/timeline"):
            page = await browser.get(path)
            assert page.status_code == 404, path
            assert "it is not yours to see" in page.text
        # Reports answers "no report" alike for a case with none and a case not the caller's.
        pdf_of_theirs = await browser.get(f"/cases/{theirs}/report.pdf")
        assert pdf_of_theirs.status_code == 404
        assert pdf_of_theirs.headers["content-type"].startswith("text/html")
        page = await browser.get(f"/cases/{theirs}")
        withdraw = await browser.submit(f"/cases/{theirs}/withdraw", {"confirm": "yes"})
        assert "it is not yours to see" in withdraw.text
        async with stack.client("intake", "someone", "coordinator") as coordinator:
            case = (await coordinator.get(f"/v1/cases/{theirs}")).json()
        assert case["status"] == "draft"
