"""The specialist's pages in a real browser: Debian's chromium driven by Playwright (PyPI), in
French at a phone's width and in English at a desktop's: sign in, accept, open a PDF and an
image in the sandboxed viewer, write the opinion (kept as a draft while typing, found again
after a reload) and send it; the patient's page then shows the opinion. No script breaks the
Content-Security-Policy and nothing is wider than the screen; with AVIS_SCREENSHOTS=docs the
queue and the workspace are kept as docs/web-specialist-*.png.
"""

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.support.browser import CHROMIUM, chromium, no_overflow, watched_page
from tests.support.samples import OPINION
from tests.support.specialist import REVIEWER, file_a_case
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
        "queue": "Mes dossiers à examiner",
        "accept": "Accepter ce dossier",
        "accepted": "Vous avez accepté ce dossier.",
        "view": "Afficher",
        "saved": "Brouillon gardé à",
        "send": "Envoyer l'avis",
        "sent": "Votre avis a été envoyé.",
        "download": "Télécharger le compte rendu (PDF)",
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
        "download": "Download the report (PDF)",
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
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


@pytest.mark.parametrize(("language", "width"), [("fr", 375), ("en", 1280)])
async def test_the_specialist_accepts_views_two_records_drafts_and_sends(
    stack: ServiceStack, browser: Browser, tmp_path: Path, language: str, width: int
) -> None:
    words = WORDS[language]
    case = await file_a_case(stack)
    suffix = "" if language == "en" else f"-phone-{language}"
    failure = tmp_path / "failure.png"
    try:
        async with watched_page(browser, stack.urls["web"], language, width, failure) as w:
            page = w.page
            await page.goto("/")
            await w.axe("sign-in")
            await page.locator(f"#identity-{REVIEWER}").check()
            await page.get_by_role("button", name=words["sign_in"]).click()
            await expect(page.get_by_role("heading", level=1)).to_have_text(words["queue"])
            row = page.get_by_role("row").filter(has_text=case["assignment"]["reference"])
            await expect(row.get_by_text(re.compile(words["due"]))).to_be_visible()
            await no_overflow(page, width)
            await w.axe("queue")
            await w.screenshot(f"web-specialist-queue{suffix}.png")

            await row.get_by_role("link").click()
            await expect(page.get_by_role("button", name=words["accept"])).to_be_visible()
            await w.axe("workspace, to accept")
            await page.get_by_role("button", name=words["accept"]).click()
            await expect(page.get_by_text(words["accepted"])).to_be_visible()
            await w.axe("workspace, accepted")

            await page.get_by_role("link", name=f"{words['view']} echo.png").click()
            image = page.locator("#viewer img.record-image")
            await expect(image).to_be_visible()
            assert await image.evaluate("(img) => img.decode().then(() => img.naturalWidth)") == 320
            await w.axe("workspace, the image")
            await the_pdf_is_drawn(page, w.context.request.get, f"{words['view']} ecg.pdf")
            await no_overflow(page, width)
            await w.axe("workspace, the PDF")
            if language == "en":
                await w.screenshot("web-specialist-viewer-pdf.png", "#viewer")

            # Typed: kept as a draft by the page itself, found again after a reload.
            await page.locator("#assessment-confirmed").check()
            diagnosis = OPINION["diagnosis"]
            assert isinstance(diagnosis, dict)
            await page.locator("#explanation").fill(diagnosis["explanation"])
            for name in SECTIONS:
                await page.locator(f"#{name}").fill(str(OPINION[name]))
            await expect(page.locator("#draft-status")).to_contain_text(words["saved"])
            await no_overflow(page, width)
            await w.axe("workspace, draft kept")
            await w.screenshot(f"web-specialist-workspace{suffix}.png")
            await page.reload()
            await expect(page.locator("#summary_for_patient")).to_have_value(
                str(OPINION["summary_for_patient"])
            )
            await expect(page.locator("#assessment-confirmed")).to_be_checked()
            await page.get_by_role("button", name=words["send"]).click()
            await expect(page.get_by_text(words["sent"])).to_be_visible()
            await w.axe("workspace, opinion sent")
            w.assert_clean()

        # The patient's page shows the opinion once the report is composed (it polls).
        async with watched_page(browser, stack.urls["web"], language, width, failure) as mine:
            await mine.page.goto("/")
            await mine.page.locator("#identity-patient-1").check()
            await mine.page.get_by_role("button", name=words["sign_in"]).click()
            await mine.page.goto(f"/cases/{case['case_id']}")
            opinion = mine.page.get_by_text(str(OPINION["summary_for_patient"]))
            await expect(opinion).to_be_visible(timeout=60_000)
            await mine.axe("the patient's case, the report")
            async with mine.page.expect_download() as downloading:
                await mine.page.get_by_role("link", name=words["download"]).click()
            download = await downloading.value
            saved = tmp_path / f"report-{language}.pdf"
            await download.save_as(saved)
            assert saved.read_bytes().startswith(b"%PDF-"), "the report's PDF, downloaded"
            mine.assert_clean()
    except Exception:
        print(stack.tails())
        raise


async def the_pdf_is_drawn(page: Page, get: Any, link_name: str) -> None:
    """The PDF in the viewer: its first page an <img> drawn on the server, 1190 x 1684 pixels
    (an A4 page at 144 dpi), no frame; the file itself still downloadable under a sandbox."""
    await page.get_by_role("link", name=link_name).click()
    first = page.locator("#viewer img.record-page").first
    await first.scroll_into_view_if_needed()
    await expect(first).to_be_visible()
    assert await page.locator("#viewer iframe").count() == 0
    source = await first.get_attribute("src")
    assert source and re.search(r"/records/[0-9a-f]{64}/pages/1$", source), source
    size = await first.evaluate(
        "(img) => img.decode().then(() => [img.naturalWidth, img.naturalHeight])"
    )
    assert size == [1190, 1684]
    download = page.locator("#viewer a[download]")
    link = await download.get_attribute("href")
    assert link and link.endswith("?download=true")
    served = await get(link)
    assert served.headers["content-security-policy"].startswith("sandbox;")
    assert served.headers["content-type"] == "application/pdf"
    assert served.headers["content-disposition"].startswith("attachment;")
