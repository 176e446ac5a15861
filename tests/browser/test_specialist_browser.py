"""The specialist's pages in a real browser: Debian's chromium driven by Playwright (PyPI), in
French at a phone's width and in English at a desktop's: sign in, accept, open a PDF and an
image in the sandboxed viewer, write the opinion (kept as a draft while typing, found again
after a reload) and send it; the patient's page then shows the opinion. No script breaks the
Content-Security-Policy and nothing is wider than the screen; with AVIS_SCREENSHOTS=docs the
queue and the workspace are kept as docs/web-specialist-*.png.
"""

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from tests.support.basics import ROOT
from tests.support.samples import OPINION
from tests.support.specialist import REVIEWER, file_a_case
from tests.support.stack import ServiceStack

CHROMIUM = os.environ.get("AVIS_CHROMIUM") or shutil.which("chromium") or ""
pytestmark = [
    pytest.mark.infra,
    pytest.mark.skipif(
        not CHROMIUM,
        reason="Debian's chromium is not installed (deploy/local/system-packages.sh installs it)",
    ),
]
SCREENSHOTS = os.environ.get("AVIS_SCREENSHOTS", "")

WORDS = {
    "fr": {
        "sign_in": "Se connecter",
        "queue": "Mes dossiers à examiner",
        "accept": "Accepter ce dossier",
        "accepted": "Vous avez accepté ce dossier.",
        "view": "Afficher",
        "saved": "Brouillon gardé à",
        "send": "Envoyer l'avis",
        "sent": "Votre avis a été envoyé.",
        "due": "À rendre sous 24 h|Dans les temps|En retard",
    },
    "en": {
        "sign_in": "Sign in",
        "queue": "My review queue",
        "accept": "Accept this case",
        "accepted": "You accepted this case.",
        "view": "View",
        "saved": "Draft kept at",
        "send": "Send the opinion",
        "sent": "Your opinion has been sent.",
        "due": "Due within a day|On time|Overdue",
    },
}
SECTIONS = (
    "imaging_and_lab_review",
    "alternative_pathways",
    "risk_benefit",
    "further_tests",
    "summary_for_patient",
)


@pytest.fixture
def stack(web_services: ServiceStack) -> ServiceStack:
    return web_services


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def keep(page: Page, name: str) -> None:
    if SCREENSHOTS:
        await page.screenshot(path=str(ROOT / SCREENSHOTS / name), full_page=True)


async def no_overflow(page: Page, width: int) -> None:
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{page.url} is wider than {width}px by {overflow}px"


@pytest.mark.parametrize(("language", "width"), [("fr", 375), ("en", 1280)])
async def test_the_specialist_accepts_views_two_records_drafts_and_sends(
    stack: ServiceStack, chromium: Browser, tmp_path: Path, language: str, width: int
) -> None:
    words = WORDS[language]
    case = await file_a_case(stack)
    suffix = "" if language == "en" else f"-phone-{language}"
    context = await chromium.new_context(
        locale=language, viewport={"width": width, "height": 900}, base_url=stack.urls["web"]
    )
    page = await context.new_page()
    violations: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or message.type == "error":
            violations.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", watch)
    page.on("pageerror", lambda error: violations.append(str(error)))
    try:
        await page.goto("/")
        await page.locator(f"#identity-{REVIEWER}").check()
        await page.get_by_role("button", name=words["sign_in"]).click()
        await expect(page.get_by_role("heading", level=1)).to_have_text(words["queue"])
        row = page.get_by_role("row").filter(has_text=case["assignment"]["reference"])
        await expect(row.get_by_text(re.compile(words["due"]))).to_be_visible()
        await no_overflow(page, width)
        await keep(page, f"web-specialist-queue{suffix}.png")

        await row.get_by_role("link").click()
        await page.get_by_role("button", name=words["accept"]).click()
        await expect(page.get_by_text(words["accepted"])).to_be_visible()

        # The PDF, then the image, in the viewer: a sandboxed frame, an <img>.
        await page.get_by_role("link", name=f"{words['view']} ecg.pdf").click()
        frame = page.locator("#viewer iframe")
        await expect(frame).to_have_attribute("sandbox", "")
        source = await frame.get_attribute("src")
        assert source and re.search(r"/records/[0-9a-f]{64}$", source)
        served = await context.request.get(source)
        assert served.headers["content-security-policy"].startswith("sandbox;")
        assert served.headers["content-type"] == "application/pdf"
        if SCREENSHOTS and language == "en":
            await page.wait_for_timeout(1500)  # the frame's own rendering, for the picture
            await page.locator("#records").screenshot(
                path=str(ROOT / SCREENSHOTS / "web-specialist-viewer-pdf.png")
            )
        await page.get_by_role("link", name=f"{words['view']} echo.png").click()
        image = page.locator("#viewer img.record-image")
        await expect(image).to_be_visible()
        assert await image.evaluate("(img) => img.decode().then(() => img.naturalWidth)") == 320

        # Typed: kept as a draft by the page itself, found again after a reload.
        await page.locator("#assessment-confirmed").check()
        diagnosis = OPINION["diagnosis"]
        assert isinstance(diagnosis, dict)
        await page.locator("#explanation").fill(diagnosis["explanation"])
        for name in SECTIONS:
            await page.locator(f"#{name}").fill(str(OPINION[name]))
        await expect(page.locator("#draft-status")).to_contain_text(words["saved"])
        await no_overflow(page, width)
        await keep(page, f"web-specialist-workspace{suffix}.png")
        await page.reload()
        await expect(page.locator("#summary_for_patient")).to_have_value(
            str(OPINION["summary_for_patient"])
        )
        await expect(page.locator("#assessment-confirmed")).to_be_checked()
        await page.get_by_role("button", name=words["send"]).click()
        await expect(page.get_by_text(words["sent"])).to_be_visible()

        # The patient's page shows the opinion once the report is composed (it polls).
        patient = await chromium.new_context(locale=language, base_url=stack.urls["web"])
        mine = await patient.new_page()
        await mine.goto("/")
        await mine.locator("#identity-patient-1").check()
        await mine.get_by_role("button", name=words["sign_in"]).click()
        await mine.goto(f"/cases/{case['case_id']}")
        await expect(mine.get_by_text(str(OPINION["summary_for_patient"]))).to_be_visible(
            timeout=60_000
        )
        await patient.close()
    except Exception:
        await page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(stack.tails())
        raise
    finally:
        await context.close()
    assert not violations, violations
