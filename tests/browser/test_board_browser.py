"""The coordinator's board, the partner console and the live timeline in a real browser (Debian's
chromium through Playwright), in French and in English; the coordinator's journey, which ends
with a legal hold set on the case, is done once with the mouse and once with the keyboard alone.
Every page visited is checked with axe-core (WCAG 2.1 AA: no serious or critical violation), the
patient's pages included, and no script breaks the Content-Security-Policy. The link of the
patient's first email, opened by another signed-in patient, shows that it is not theirs to see. With
AVIS_SCREENSHOTS=docs the main pages are kept as docs/web-coordinator-*.png and
docs/web-partner-*.png."""

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.support.basics import unique
from tests.support.browser import (
    CHROMIUM,
    add_reviewer,
    arrow_to,
    assignments_of,
    chromium,
    declined_case,
    eventually,
    file_case,
    tab_to,
    watched_page,
)
from tests.support.notify import body_text, hook_receiver, mailbox
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
        "board": "Tableau de coordination",
        "declined_before": "a déjà refusé cette demande",
        "give": "Confier la demande",
        "given": "La demande a été confiée au ou à la spécialiste.",
        "partner": "Console partenaire",
        "subscribe": "S'abonner",
        "once": "Copiez-le maintenant : il n'est montré qu'une fois.",
        "dead": "En échec : peut être rejoué",
        "replay": "Rejouer",
        "replayed": "L'envoi est de nouveau en file, avec le même webhook-id.",
        "delivered": "Livré",
        "hold": "Placer sous conservation légale",
        "held": "La demande est placée sous conservation légale.",
    },
    "en": {
        "sign_in": "Sign in",
        "board": "Coordinator's board",
        "declined_before": "already declined this case",
        "give": "Give the case",
        "given": "The case was given to the specialist.",
        "partner": "Partner console",
        "subscribe": "Subscribe",
        "once": "Copy it now: it is shown this once and never again.",
        "dead": "Failed: can be replayed",
        "replay": "Replay",
        "replayed": "The delivery is queued again, with the same webhook-id.",
        "delivered": "Delivered",
        "hold": "Set a legal hold",
        "held": "The case is under a legal hold.",
    },
}


@pytest.fixture
def stack(web_services: ServiceStack) -> ServiceStack:
    return web_services


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


@pytest.mark.parametrize(("language", "keyboard"), [("fr", False), ("en", True)])
async def test_the_coordinator_reassigns_a_declined_case(
    stack: ServiceStack, browser: Browser, tmp_path: Path, language: str, keyboard: bool
) -> None:
    words = WORDS[language]
    case_id, reference, spare = await declined_case(stack)
    web = stack.urls["web"]
    async with watched_page(browser, web, language, failure=tmp_path / "failure.png") as w:
        page = w.page
        await page.goto("/signin")
        await w.axe("sign-in")
        if keyboard:
            await tab_to(page, name="identity")
            await arrow_to(page, "identity-coordinator-1")
            await tab_to(page, text=words["sign_in"])
            await page.keyboard.press("Enter")
        else:
            await page.get_by_label("coordinator-1").check()
            await page.get_by_role("button", name=words["sign_in"]).click()
        await expect(page).to_have_url(re.compile(r"/board$"))
        await expect(page.get_by_role("heading", level=1)).to_have_text(words["board"])
        await w.axe("board")
        suffix = "" if language == "en" else f"-{language}"
        await w.screenshot(f"web-coordinator-board{suffix}.png")

        if keyboard:
            await tab_to(page, text=reference)
            await page.keyboard.press("Enter")
        else:
            await page.get_by_role("link", name=reference).first.click()
        await expect(page).to_have_url(re.compile(rf"/board/cases/{case_id}$"))
        await expect(page.get_by_text(words["declined_before"]).first).to_be_visible()
        await w.axe("case")
        await w.screenshot(f"web-coordinator-case{suffix}.png")

        if keyboard:
            await tab_to(page, name="reviewer_id")
            await arrow_to(page, f"reviewer-{spare}")
            await page.keyboard.press("Space")
            await tab_to(page, text=words["give"])
            await page.keyboard.press("Enter")
        else:
            await page.locator(f"#reviewer-{spare}").check()
            await page.get_by_role("button", name=words["give"]).click()
        await expect(page.get_by_text(words["given"])).to_be_visible()
        await w.axe("case, given")
        rounds = await assignments_of(stack, case_id)
        assert any(a["reviewer_id"] == spare and a["status"] == "assigned" for a in rounds)

        # A legal hold, with its reason: the case may no longer be erased while it stands.
        if keyboard:
            await tab_to(page, id="hold-reason")
            await page.keyboard.type("Dispute with the clinic")
            await tab_to(page, text=words["hold"])
            await page.keyboard.press("Enter")
        else:
            await page.locator("#hold-reason").fill("Litige avec la clinique")
            await page.get_by_role("button", name=words["hold"]).click()
        await expect(page.get_by_text(words["held"])).to_be_visible()
        await expect(page.locator("#hold-stands")).to_be_visible()
        await w.axe("case, held")

        for path in (
            "/board/reviewers",
            "/board/translations",
            "/board/partners?partner_id=partner-1",
            "/board/fhir-endpoints",
        ):
            await page.goto(path)
            await w.axe(path)
        if language == "en":
            await page.goto("/board/reviewers")
            await w.screenshot("web-coordinator-reviewers.png")
    w.assert_clean()


async def test_a_partner_subscribes_sees_a_failed_delivery_and_replays_it(
    stack: ServiceStack, browser: Browser, tmp_path: Path
) -> None:
    words = WORDS["fr"]
    async with (
        hook_receiver() as (receiver, port),
        watched_page(browser, stack.urls["web"], "fr", failure=tmp_path / "failure.png") as w,
    ):
        receiver.answer["/hooks"] = 503
        page = w.page
        await page.goto("/signin")
        await page.get_by_label("partner-1").check()
        await page.get_by_role("button", name=words["sign_in"]).click()
        await expect(page.get_by_role("heading", level=1)).to_have_text(words["partner"])
        await w.axe("console")
        await page.locator("#url").fill(f"http://127.0.0.1:{port}/hooks")
        await page.locator("#description").fill("Assurance santé, recette")
        await page.get_by_role("button", name=words["subscribe"]).click()
        await expect(page.get_by_text(words["once"])).to_be_visible()
        assert (await page.locator("#secret").input_value()).startswith("whsec_")
        await w.axe("console, secret shown")

        await file_case(stack, sub="partner-1", partner_id="partner-1", language="fr")
        await page.goto("/partner")
        assert "whsec_" not in await page.content()  # shown once, never again
        await w.screenshot("web-partner-console-fr.png")
        await page.get_by_role("link", name=f"http://127.0.0.1:{port}/hooks").click()

        async def dead() -> bool:
            await page.reload()
            return await page.get_by_text(words["dead"]).count() > 0

        await eventually(dead, "a failed delivery on the page", stack)
        await w.axe("deliveries")
        await w.screenshot("web-partner-deliveries-fr.png")
        receiver.answer["/hooks"] = 204
        await page.get_by_role("button", name=re.compile(words["replay"])).first.click()
        await expect(page.get_by_text(words["replayed"])).to_be_visible()

        async def delivered() -> bool:
            await page.reload()
            return await page.get_by_text(words["delivered"], exact=True).count() > 0

        await eventually(delivered, "the replayed delivery delivered", stack)
        assert receiver.at("/hooks", 204)
    w.assert_clean()


async def test_the_timeline_moves_by_server_sent_events_and_the_patients_pages_pass_axe(
    stack: ServiceStack, browser: Browser, tmp_path: Path
) -> None:
    # Nobody reads French haematology yet: the case waits until a specialist joins, after the
    # page is open, so only the live stream (or its polling fallback) can show the assignment.
    email = f"{unique('live')}@example.org"
    case_id, _ = await file_case(stack, language="fr", submit=False, email=email)
    async with watched_page(
        browser, stack.urls["web"], "en", width=375, failure=tmp_path / "failure.png"
    ) as w:
        page = w.page
        await page.goto("/signin")
        await page.get_by_label("patient-1").check()
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(re.compile(r"/cases$"))
        await w.axe("my requests")
        await page.goto("/cases/new")
        await w.axe("new request, step 1")
        await page.goto(f"/cases/{case_id}")
        await w.axe("draft case")
        await page.get_by_label("I have read this text and I agree").check()
        await page.get_by_role("button", name="Send my request").click()
        await expect(page.get_by_text("Request sent")).to_be_visible()
        await w.axe("submitted case")
        await add_reviewer(stack, "haematology", "fr", capacity=5)
        pushed = page.locator("#timeline[data-pushed=true]")
        await expect(pushed).to_contain_text("Given to a specialist", timeout=60_000)
        # No reload: the notice of the submission is still there.
        await expect(page.get_by_text("Your request has been sent.")).to_be_visible()
        await w.axe("case, pushed")
        await page.goto("/cases/00000000-0000-4000-8000-000000000000")
        await w.axe("not found")
    w.assert_clean()
    assert len(w.checked) == 6

    async def emailed() -> str | None:
        mails = mailbox(email)
        return body_text(mails[0]) if mails else None

    text = await eventually(emailed, "the first email", stack)
    link = re.search(rf"{re.escape(stack.urls['web'])}/cases/[0-9a-f-]{{36}}", text)
    assert link and link.group(0).endswith(f"/cases/{case_id}"), text
    async with watched_page(
        browser, stack.urls["web"], "en", width=375, failure=tmp_path / "other.png"
    ) as other:
        await other.page.goto("/signin")
        await other.page.get_by_label("patient-2").check()
        await other.page.get_by_role("button", name="Sign in").click()
        await expect(other.page).to_have_url(re.compile(r"/cases$"))
        shown = await other.page.goto(link.group(0))
        assert shown is not None and shown.status == 404
        await expect(other.page.get_by_text("it is not yours to see")).to_be_visible()
        await other.axe("another patient's case, refused")
    other.assert_clean()
