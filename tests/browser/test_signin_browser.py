"""People's sign-in through the test stack's Hydra and Kratos in a real browser (Debian's
chromium through Playwright), in French and in English: the sign-in button, the identity
server's form rendered by web and posted to Kratos, a specialist's TOTP code, sign-out. A
browser holds a form's redirects to the page's `form-action`, which an HTTP client does not:
no Content-Security-Policy complaint on the way, and each page passes axe-core (WCAG 2.1 AA)."""

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser

from tests.support.browser import CHROMIUM, chromium, watched_page
from tests.support.signin import OidcWeb, oidc_web, people, totp

pytestmark = [
    pytest.mark.infra,
    pytest.mark.skipif(
        not CHROMIUM,
        reason="Debian's chromium is not installed (deploy/local/system-packages.sh installs it)",
    ),
]

WORDS = {
    "fr": {"go": "Continuer vers la connexion", "code": "application d'authentification"},
    "en": {"go": "Continue to sign-in", "code": "authenticator app"},
}


@pytest.fixture(scope="module")
async def web() -> AsyncIterator[OidcWeb]:
    async with oidc_web() as served:
        yield served


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.mark.parametrize(("language", "subject"), [("fr", "rev-cardio-1"), ("en", "patient-1")])
async def test_a_person_signs_in_and_out_in_a_browser(
    web: OidcWeb, browser: Browser, language: str, subject: str
) -> None:
    person, words = people()[subject], WORDS[language]
    async with watched_page(browser, web.url, language) as watched:
        page = watched.page
        await page.goto("/signin")
        await watched.axe("sign-in")
        await page.get_by_role("button", name=words["go"]).click()
        await page.wait_for_url("**/signin/password?flow=*")
        await watched.axe("password")
        await page.fill("input[name=identifier]", person["email"])
        await page.fill("input[name=password]", person["password"])
        await page.click("button[value=password]")
        if person["totp_secret"]:
            await page.wait_for_selector("input[name=totp_code]")
            assert words["code"] in await page.locator("main").inner_text()
            await watched.axe("second factor")
            await page.fill("input[name=totp_code]", totp(person["totp_secret"]))
            await page.click("button[value=totp]")
        await page.wait_for_url("**/review" if person["totp_secret"] else "**/cases")
        await page.locator("form[action='/signout'] button").click()
        await page.wait_for_url("**/signin")
        watched.assert_clean()
