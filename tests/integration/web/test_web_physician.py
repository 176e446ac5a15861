"""The physician's copy in the patient's pages, against the services and web as processes on the
test stack: the request names the physician's email, and the submission sends the report to
them only with its own box ticked; an email without the box is refused in plain words."""

import pytest

from tests.integration.web.test_web_journey import case_id_of
from tests.support.basics import unique
from tests.support.samples import pdf
from tests.support.stack import ServiceStack
from tests.support.web import browsing

pytestmark = pytest.mark.infra


@pytest.fixture
def stack(web_services: ServiceStack) -> ServiceStack:
    return web_services


async def test_the_report_goes_to_the_physician_only_with_its_box_ticked(
    stack: ServiceStack,
) -> None:
    name = unique("Martin")
    async with browsing(stack, "en-GB,en;q=0.9") as browser:
        await browser.sign_in()
        await browser.get("/cases/new")
        await browser.submit("/cases/new/specialty", {"specialty": "cardiology"})
        await browser.submit("/cases/new/questions", {"questions": ["further_tests"]})
        await browser.submit("/cases/new/summary", {"clinical_summary": "Chest pain on effort."})
        form = await browser.get("/cases/new?step=people")
        assert "Your physician&#39;s email (optional)" in form.text, form.text
        page = await browser.submit(
            "/cases/new/people",
            {
                "given_name": "Ada",
                "family_name": name,
                "birth_date": "1970-05-04",
                "email": f"{name.lower()}@example.org",
                "preferred_language": "en",
                "physician_name": "Dr Bernard",
                "physician_email": f"dr-{name.lower()}@cabinet.example",
            },
        )
        assert "saved as a draft" in page.text, page.text
        case_id = case_id_of(str(page.url))
        await browser.submit(
            f"/cases/{case_id}/documents",
            {"kind": "test_result"},
            files=[("files", ("ecg.pdf", pdf(unique("ecg")), "application/pdf"))],
        )
        consent = {"consent": "yes", "consent_version": "consent-2026-01"}
        page = await browser.submit(f"/cases/{case_id}/submit", consent)
        assert "tick the box to send them the report" in page.text, page.text
        assert "Your request has been sent" not in page.text
        page = await browser.submit(
            f"/cases/{case_id}/submit", consent | {"share_with_physician": "yes"}
        )
        assert "Your request has been sent" in page.text, page.text
