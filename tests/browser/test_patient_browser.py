"""The patient's pages in a real browser: Debian's chromium driven by Playwright (PyPI), in
French at a phone's width and in English at a desktop's: sign in, write a request in four
steps, add two records, consent, submit, and see the timeline move to the specialist without
reloading. No script breaks the Content-Security-Policy and nothing is wider than the screen;
with AVIS_SCREENSHOTS=docs the case pages are kept as docs/web-patient-case*.png.

Playwright's own browser download is not used: chromium comes from the distribution
(deploy/local/system-packages.sh installs it), passed as `executable_path`.
"""

import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.support.basics import unique
from tests.support.browser import CHROMIUM, chromium, no_overflow, watched_page
from tests.support.samples import pdf, png
from tests.support.stack import ServiceStack

pytestmark = [
    pytest.mark.infra,
    pytest.mark.skipif(
        not CHROMIUM,
        reason="Debian's chromium is not installed (deploy/local/system-packages.sh installs it)",
    ),
]

WORDS = {
    "fr": {
        "sign_in": "Se connecter",
        "new": "Demander un second avis",
        "next": "Continuer",
        "file": "Enregistrer ma demande",
        "add": "Ajouter",
        "consent": "J'ai lu ce texte et j'accepte",
        "send": "Envoyer ma demande",
        "sent": "Demande envoyée",
        "assigned": "Confiée à un·e spécialiste",
        "added": "Un document a été ajouté.",
        "submitted": "Votre demande a été envoyée.",
        "access": "Qui a consulté mon dossier",
    },
    "en": {
        "sign_in": "Sign in",
        "new": "Ask for a second opinion",
        "next": "Continue",
        "file": "Save my request",
        "add": "Add",
        "consent": "I have read this text and I agree",
        "send": "Send my request",
        "sent": "Request sent",
        "assigned": "Given to a specialist",
        "added": "A record was added.",
        "submitted": "Your request has been sent.",
        "access": "Who looked at my file",
    },
}


@pytest.fixture
def stack(web_services: ServiceStack) -> ServiceStack:
    return web_services


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


@pytest.mark.parametrize(("language", "width"), [("fr", 375), ("en", 1024)])
async def test_a_patient_files_a_case_with_two_records_and_submits(
    stack: ServiceStack, browser: Browser, tmp_path: Path, language: str, width: int
) -> None:
    words = WORDS[language]
    records = [tmp_path / "ecg.pdf", tmp_path / "scan.png"]
    records[0].write_bytes(pdf(unique("ecg")))
    records[1].write_bytes(png(unique("scan")))
    failure = tmp_path / "failure.png"
    try:
        # A patient in France: the pages write times on their clock, not in UTC.
        paris = "Europe/Paris"
        async with watched_page(browser, stack.urls["web"], language, width, failure, paris) as w:
            page = w.page
            await page.goto("/")
            await expect(page.locator("html")).to_have_attribute("lang", language)
            await page.get_by_label("patient-1").check()
            await page.get_by_role("button", name=words["sign_in"]).click()
            await page.get_by_role("link", name=words["new"]).click()
            await page.locator("#specialty").select_option("cardiology")
            await page.get_by_role("button", name=words["next"]).click()
            await page.locator("#question-further_tests").check()
            await page.get_by_role("button", name=words["next"]).click()
            await page.locator("#clinical_summary").fill("Chest pain on effort since March.")
            await page.get_by_role("button", name=words["next"]).click()
            await page.locator("#given_name").fill("Camille")
            await page.locator("#family_name").fill(unique("Martin"))
            await page.locator("#birth_date").fill("1971-03-14")
            await page.locator("#email").fill("camille.martin@example.org")
            await page.get_by_role("button", name=words["file"]).click()
            await expect(page).to_have_url(re.compile(r"/cases/[0-9a-f-]{36}$"))
            case_url = page.url

            await page.locator("#files").set_input_files(records)
            await page.get_by_role("button", name=words["add"], exact=True).click()
            await expect(page.get_by_text(words["added"])).to_have_count(2)
            await expect(page.get_by_text("ecg.pdf")).to_be_visible()
            await expect(page.get_by_text("scan.png")).to_be_visible()
            await page.get_by_label(words["consent"]).check()
            await page.get_by_role("button", name=words["send"]).click()
            await expect(page.get_by_text(words["sent"])).to_be_visible()

            # The timeline moves on by itself (htmx polls it): no reload here.
            await expect(page.get_by_text(words["assigned"]).first).to_be_visible(timeout=60_000)
            assert await page.evaluate("typeof window.htmx") == "object"
            on_paris_clock = re.compile(r"\d{2}:\d{2} \+0[12]00")  # CET or CEST
            await expect(page.locator("#timeline li").first).to_contain_text(on_paris_clock)
            await no_overflow(page, width)
            # No reload happened: the notice of the submission is still on the page.
            await expect(page.get_by_text(words["submitted"])).to_be_visible()
            await w.axe("case, submitted")
            await w.screenshot(
                "web-patient-case.png" if language == "en" else "web-patient-case-phone-fr.png"
            )

            # Who looked at my file: the trail of reads, in plain words.
            await page.get_by_role("link", name=words["access"]).click()
            await expect(page.get_by_role("heading", level=1)).to_contain_text(words["access"])
            await no_overflow(page, width)
            await w.axe("who looked at my file")
            await w.screenshot(
                "web-patient-access.png" if language == "en" else "web-patient-access-phone-fr.png"
            )

            # A claim link's page (the secret is checked only when the button is pressed).
            case_id = case_url.rsplit("/", 1)[1]
            await page.goto(f"/claim/{case_id}/{secrets.token_urlsafe(32)}")
            await expect(page.locator("main form button")).to_be_visible()
            await no_overflow(page, width)
            await w.axe("claim")
            w.assert_clean()
    except Exception:
        print(stack.tails())
        raise
