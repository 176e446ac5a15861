"""The link of the first email of a case a partner filed opens, after sign-in, the page where
its patient claims the case; the case is then theirs on its page, and the same link refused to
anyone after (in plain words), on the processes of the test stack with notify's real email."""

import re

import pytest

from tests.support.basics import eventually, unique
from tests.support.notify import body_text, mailbox
from tests.support.samples import case_body, consent_body, pdf
from tests.support.stack import ServiceStack
from tests.support.web import browsing

pytestmark = pytest.mark.infra


@pytest.fixture
def stack(web_services: ServiceStack) -> ServiceStack:
    return web_services


async def partner_files_a_case(stack: ServiceStack, email: str) -> str:
    """A partner files and submits a case for a patient who has no account yet."""
    async with stack.client("intake", "partner-staff", "partner", "partner-9") as partner:
        patient = case_body()["patient"] | {"email": email, "preferred_language": "en"}
        created = await partner.post("/v1/cases", json=case_body(patient=patient))
        assert created.status_code == 201, created.text
        case_id = str(created.json()["case_id"])
        stored = await partner.post(
            f"/v1/cases/{case_id}/documents",
            files={"file": ("scan.pdf", pdf(unique("scan")), "application/pdf")},
            data={"kind": "imaging_report"},
        )
        assert stored.status_code == 201, stored.text
        submitted = await partner.post(f"/v1/cases/{case_id}/submit", json=consent_body())
        assert submitted.status_code == 200, submitted.text
    return case_id


async def test_an_emailed_claim_link_opens_for_its_patient_once(stack: ServiceStack) -> None:
    email = f"{unique('claim')}@example.org"
    case_id = await partner_files_a_case(stack, email)
    mail = (await eventually(lambda: mailbox(email), timeout=60))[0]  # "case received" first
    web = stack.urls["web"]
    found = re.search(rf"{re.escape(web)}(/claim/{case_id}/[A-Za-z0-9_-]+)", body_text(mail))
    assert found, body_text(mail)
    link = found.group(1)

    async with browsing(stack) as browser:
        page = await browser.get(link)
        assert page.url.path == "/signin", "the link asks for sign-in first"
        page = await browser.submit("/signin", {"identity": "patient-2"})
        assert page.url.path == link, "then opens the page the email linked to"
        assert "Add the request" in page.text
        page = await browser.submit(link, {})
        assert page.url.path == f"/cases/{case_id}", page.text
        assert "The request is now in your account." in page.text
        assert "Withdraw" in page.text, "the case is theirs to act on"

    async with browsing(stack) as other:
        await other.sign_in("patient-1")
        page = await other.get(link)
        page = await other.submit(link, {})
        assert page.url.path == "/cases"
        assert "This link is not valid, or it was already used." in page.text
        refused = await other.get(f"/cases/{case_id}")
        assert refused.status_code == 404 and "it is not yours to see" in refused.text

    # Who looked at the file, in plain words, for its patient: the partner's writes, the
    # claim, and the refused attempt with the used link.
    async with browsing(stack) as browser:
        await browser.get("/signin")
        await browser.submit("/signin", {"identity": "patient-2"})
        case_page = await browser.get(f"/cases/{case_id}")
        assert f'href="/cases/{case_id}/access"' in case_page.text
        page = await browser.get(f"/cases/{case_id}/access")
        assert page.status_code == 200, page.text
        rows = re.findall(r"<tr>\s*<td>[^<]*</td>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>", page.text)
        said = [(who.strip(), what.strip()) for who, what in rows]
        assert ("The partner that filed the request", "created the request") in said, said
        assert ("You", "added the request to their account") in said, said
        assert ("A patient", "tried to add the request to their account: refused") in said, said
        assert said.index(("You", "added the request to their account")) < said.index(
            ("A patient", "tried to add the request to their account: refused")
        )
