"""International review's consent in the patient's pages, against the services and web as
processes on the test stack: the submission offers its own box with its words (fr here), and the
case is submitted with the `international_review` scope only when the box is ticked."""

import re

import pytest

from tests.support.basics import unique
from tests.support.samples import pdf
from tests.support.stack import ServiceStack
from tests.support.web import browsing

pytestmark = pytest.mark.infra


def case_id_of(url: str) -> str:
    found = re.search(r"/cases/([0-9a-f-]{36})$", url)
    assert found, url
    return found.group(1)


@pytest.fixture
def stack(web_services: ServiceStack) -> ServiceStack:
    return web_services


async def test_the_patient_accepts_an_international_review_with_its_box(
    stack: ServiceStack,
) -> None:
    name = unique("Morel")
    async with browsing(stack, "fr-FR,fr;q=0.9") as browser:
        await browser.sign_in()
        await browser.get("/cases/new")
        await browser.submit("/cases/new/specialty", {"specialty": "nephrology"})
        await browser.submit("/cases/new/questions", {"questions": ["further_tests"]})
        await browser.submit("/cases/new/summary", {"clinical_summary": "Créatinine en hausse."})
        page = await browser.submit(
            "/cases/new/people",
            {
                "given_name": "Lou",
                "family_name": name,
                "birth_date": "1968-02-11",
                "email": f"{name.lower()}@example.org",
                "preferred_language": "fr",
            },
        )
        case_id = case_id_of(str(page.url))
        page = await browser.submit(
            f"/cases/{case_id}/documents",
            {"kind": "test_result"},
            files=[("files", ("bilan.pdf", pdf(unique("bilan")), "application/pdf"))],
        )
        case_page = await browser.get(f"/cases/{case_id}")
        assert "Accepter un spécialiste qui ne lit pas ma langue" in case_page.text, case_page.text
        assert 'name="international_review"' in case_page.text
        consent = {"consent": "yes", "consent_version": "consent-2026-01"}
        await browser.submit(f"/cases/{case_id}/submit", consent | {"international_review": "yes"})
    async with stack.client("intake", "patient-1", "patient") as http:
        case = await http.get(f"/v1/cases/{case_id}")
    assert case.status_code == 200, case.text
    assert case.json()["consent"]["scopes"] == ["review", "international_review"]
