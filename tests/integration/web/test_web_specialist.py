"""The specialist's journey through the web pages, over HTTP, against the four services and web as
processes on the test stack: the queue, accepting, the records in the sandboxed viewer (a DICOM
file by its technical facts only), the draft kept across a reload, the opinion sent once and
then corrected as a new version, the patient's report showing it; declining with a reason; and
another reviewer refused the case's pages in plain words."""

import asyncio
import re

import pytest

from tests.support.samples import OPINION
from tests.support.specialist import (
    OTHER_REVIEWER,
    PATIENT_ID,
    PATIENT_NAME,
    REVIEWER,
    file_a_case,
)
from tests.support.stack import ServiceStack
from tests.support.web import Browser, browsing, csrf_of

pytestmark = pytest.mark.infra


@pytest.fixture
def stack(web_services: ServiceStack) -> ServiceStack:
    return web_services


def opinion_form() -> dict[str, str]:
    """The sample opinion as the workspace's form sends it."""
    diagnosis = OPINION["diagnosis"]
    assert isinstance(diagnosis, dict)
    return {**diagnosis, **{k: v for k, v in OPINION.items() if isinstance(v, str)}}


def records_of(page: str) -> dict[str, str]:
    """The workspace's records: file name -> document id."""
    found = re.findall(r'\?record=([0-9a-f]{64})#viewer"[^>]*>View ([^<]+)</a>', page)
    return {name: document_id for document_id, name in found}


async def report_shows(browser: Browser, case_id: str, text: str) -> bool:
    for _ in range(120):
        page = await browser.get(f"/cases/{case_id}")
        if "Download the report (PDF)" in page.text and text in page.text:
            return True
        await asyncio.sleep(0.5)
    return False


async def test_the_specialist_accepts_reads_drafts_sends_and_corrects(stack: ServiceStack) -> None:
    case = await file_a_case(stack, dicom_too=True)
    aid, case_id = case["assignment"]["id"], case["case_id"]
    async with browsing(stack, "en") as browser:
        queue = await browser.sign_in(REVIEWER)
        assert str(queue.url).endswith("/review") and "My review queue" in queue.text
        assert f'href="/review/{aid}"' in queue.text and "Waiting for your answer" in queue.text
        page = await browser.get(f"/review/{aid}")
        assert "Breathless on stairs" in page.text and "Accept this case" in page.text
        assert "Camille" not in page.text  # the reviewer never sees the patient's identity
        page = await browser.submit(f"/review/{aid}/accept", {})
        assert "You accepted this case" in page.text

        records = records_of(page.text)
        assert set(records) == {"ecg.pdf", "echo.png", "slice.dcm"}, page.text
        for name, kind in (("ecg.pdf", "application/pdf"), ("echo.png", "image/png")):
            served = await browser.http.get(f"/review/{aid}/records/{records[name]}")
            assert served.status_code == 200 and served.headers["content-type"] == kind
            assert served.headers["content-security-policy"].startswith("sandbox;")
            assert served.headers["x-content-type-options"] == "nosniff"
            assert re.fullmatch(
                r'inline; filename="record-[0-9a-f]{12}\.(pdf|png)"',
                served.headers["content-disposition"],
            )
        dicom = await browser.get(f"/review/{aid}?record={records['slice.dcm']}")
        assert "Technical details of this DICOM file" in dicom.text and "MONOCHROME2" in dicom.text
        for secret in (PATIENT_NAME, "Dupré", PATIENT_ID, "Saint-Secret"):
            assert secret not in dicom.text
        not_served = await browser.http.get(f"/review/{aid}/records/{records['slice.dcm']}")
        assert not_served.status_code == 404

        # Typed, kept as a draft by the page, found again after a reload.
        saved = await browser.http.post(
            f"/review/{aid}/draft",
            data={"csrf": csrf_of(page), "explanation": "Murmur fits a narrowed valve."},
            headers={"HX-Request": "true"},
        )
        assert saved.status_code == 200 and "Draft kept at" in saved.text
        page = await browser.get(f"/review/{aid}")
        assert "Murmur fits a narrowed valve." in page.text

        page = await browser.submit(f"/review/{aid}/opinion", opinion_form())
        assert "Your opinion has been sent" in page.text and "Version 1" in page.text
        page = await browser.submit(
            f"/review/{aid}/correction", opinion_form() | {"further_tests": "A stress echo."}
        )
        assert "sent as a new version" in page.text and "Version 2" in page.text

    async with browsing(stack, "en") as patient:
        await patient.sign_in("patient-1")
        assert await report_shows(patient, case_id, "A stress echo."), stack.tails()


async def test_declining_needs_a_reason_and_gives_the_case_back(stack: ServiceStack) -> None:
    case = await file_a_case(stack)
    aid = case["assignment"]["id"]
    async with browsing(stack, "fr") as browser:
        await browser.sign_in(REVIEWER)
        await browser.get(f"/review/{aid}")
        page = await browser.submit(f"/review/{aid}/decline", {"reason_code": "other"})
        assert "choisissez une raison et dites-la" in page.text
        page = await browser.submit(
            f"/review/{aid}/decline",
            {"reason_code": "conflict_of_interest", "reason": "I know this family."},
        )
        assert str(page.url).endswith("/review")
        assert "Vous avez refusé le dossier" in page.text
        assert "Refusé" in page.text
        gone = await browser.get(f"/review/{aid}/records/{'0' * 64}")
        assert gone.status_code == 409


async def test_another_reviewer_cannot_open_the_case(stack: ServiceStack) -> None:
    case = await file_a_case(stack)
    aid = case["assignment"]["id"]
    async with browsing(stack, "en") as browser:
        await browser.sign_in(OTHER_REVIEWER)
        for path in (f"/review/{aid}", f"/review/{aid}/records/{'0' * 64}"):
            page = await browser.get(path)
            assert page.status_code == 403, (path, page.text)
            assert "This case is given to another specialist." in page.text
            assert "problem" not in page.text
        csrf = csrf_of(await browser.get("/review"))
        refused = await browser.http.post(f"/review/{aid}/accept", data={"csrf": csrf})
        # Said in words on the page it leads to, and nothing was accepted.
        assert refused.status_code == 403
        assert "This case is given to another specialist." in refused.text
    async with stack.client("review", REVIEWER, "reviewer") as owner:
        mine = await owner.get(f"/v1/assignments/{aid}")
        assert mine.json()["status"] == "assigned"
