"""The page the treating physician's emailed link opens, over a fake of reports: no account and
no sign-in; the right secret streams the report's PDF (never cached, under the pages' strict
policy), the link's expiry is a page of plain words in the physician's language (410), and a
wrong secret the not-found page (404), never reports' raw problem body."""

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx

from avis.web.main import create_app
from avis.web.settings import Settings

CASE_ID = "0b6f1d3e-8c55-4d0e-9a43-7f3e2d1c0a99"
SECRET = "Qm9uam91ciBkb2N0ZXVyIQ-_abcdefghijklmnopqr"
PDF_BYTES = b"%PDF-1.7\n% the report\n"


def problem(status: int, slug: str) -> httpx.Response:
    body = json.dumps({"type": f"https://avis.health/problems/{slug}", "status": status})
    return httpx.Response(
        status, content=body, headers={"content-type": "application/problem+json"}
    )


@asynccontextmanager
async def anonymous(
    services: Callable[[httpx.Request], httpx.Response], language: str = "fr"
) -> AsyncIterator[httpx.AsyncClient]:
    """The web app over a fake of the services, and a browser nobody signed in on."""
    app = create_app(
        Settings(
            avis_env="development",
            jwt_secret="s" * 40,
            live_events=False,
            reports_url="http://reports",
        ),
        transport=httpx.MockTransport(services),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://web",
            headers={"Accept-Language": language},
        ) as client,
    ):
        yield client


async def test_the_right_secret_opens_the_report_without_an_account() -> None:
    asked: list[httpx.Request] = []

    def reports(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        if request.url.path == f"/v1/cases/{CASE_ID}/report/physician/{SECRET}":
            return httpx.Response(
                200, content=PDF_BYTES, headers={"content-type": "application/pdf"}
            )
        return problem(404, "not-found")

    async with anonymous(reports) as browser:
        opened = await browser.get(f"/physician/{CASE_ID}/{SECRET}?lang=en")
    assert opened.status_code == 200, opened.text
    assert opened.headers["content-type"] == "application/pdf"
    assert opened.content == PDF_BYTES
    assert opened.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in opened.headers["content-security-policy"]
    assert opened.headers["referrer-policy"] == "no-referrer"
    (call,) = asked
    assert call.url.host == "reports" and "authorization" not in call.headers
    assert call.headers["accept"] == "application/pdf"


async def test_an_expired_link_says_so_in_the_physicians_language() -> None:
    def reports(request: httpx.Request) -> httpx.Response:
        return problem(410, "physician-link-expired")

    path = f"/physician/{CASE_ID}/{SECRET}"
    async with anonymous(reports, language="fr") as browser:
        english = await browser.get(f"{path}?lang=en")
        french = await browser.get(f"{path}?lang=fr")
        browsers = await browser.get(f"{path}?lang=xx")  # not a language: the browser's
    for page in (english, french, browsers):
        assert page.status_code == 410
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        assert "physician-link-expired" not in page.text and "problem" not in page.text
        assert "<script>" not in page.text
    assert 'lang="en"' in english.text and "The link to this report has expired" in english.text
    assert 'lang="fr"' in french.text and "Le lien vers ce compte rendu a expiré" in french.text
    assert "Le lien vers ce compte rendu a expiré" in browsers.text


async def test_a_wrong_secret_is_the_not_found_page() -> None:
    def reports(request: httpx.Request) -> httpx.Response:
        return problem(404, "report-not-found")  # as reports answers it

    async with anonymous(reports, language="en") as browser:
        wrong = await browser.get(f"/physician/{CASE_ID}/{'A' * 43}")
        elsewhere = await browser.get(f"/cases/{CASE_ID}/nothing-here")
        malformed = await browser.get(f"/physician/{CASE_ID}/short")
    assert wrong.status_code == 404
    assert "This page does not exist, or it is not yours to see." in wrong.text
    assert "not-found" not in wrong.text and "not ready" not in wrong.text
    assert elsewhere.status_code == 404
    assert malformed.status_code in (404, 422) and "detail" not in malformed.text


async def test_a_method_the_page_does_not_take_is_a_page_that_says_which_it_does() -> None:
    def services(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no service is asked: {request.url}")

    async with anonymous(services) as browser:
        page = await browser.request("TRACE", f"/physician/{CASE_ID}/{SECRET}")
        claim = await browser.request("OPTIONS", f"/claim/{CASE_ID}/{SECRET}")
    assert page.status_code == 405
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["allow"] == "GET, HEAD", "RFC 9110: a 405 names the methods allowed"
    # Two routes at one path (the claim's page and its form): both named.
    assert (claim.status_code, claim.headers["allow"]) == (405, "GET, HEAD, POST")
