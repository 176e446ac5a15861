"""What the browser tests share: Debian's chromium through Playwright, a watch on the console
(a script error or a Content-Security-Policy violation fails the test), an axe-core check of
the page (WCAG 2.1 AA; a serious or critical violation fails it), keyboard-only moves, and
screenshots kept in docs/ when AVIS_SCREENSHOTS says so.

axe-core is vendored in tests/data/axe-core (see its VERSION). It is injected with
Playwright's `add_script_tag` from a same-origin address that the test itself answers
(`page.route`), so the page's strict Content-Security-Policy stays on and is tested too: an
inline script would be refused by it.
"""

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    async_playwright,
)

from tests.support.basics import ROOT, unique
from tests.support.samples import case_body, consent_body, pdf, upload
from tests.support.stack import ServiceStack

CHROMIUM = os.environ.get("AVIS_CHROMIUM") or shutil.which("chromium") or ""
AXE = ROOT / "tests" / "data" / "axe-core" / "axe.min.js"
AXE_PATH = "/__axe-core__/axe.min.js"  # answered by the test, never by the application
# AVIS_SCREENSHOTS=docs keeps the journeys' main pages there.
SCREENSHOTS = os.environ.get("AVIS_SCREENSHOTS", "")
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
FAILING_IMPACTS = ("serious", "critical")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's chromium, headless (Playwright's own download is not used)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


class Watched:
    """A page whose console errors, CSP violations and accessibility violations are kept."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.context = context
        self.page = page
        self.errors: list[str] = []
        self.accessibility: list[str] = []
        self.checked: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _console(self, message: ConsoleMessage) -> None:
        where = message.location.get("url")
        if message.text.startswith("Failed to load resource") and where == self.page.url:
            return  # the page itself answered an error status (a 404 page): not a script fault
        if "Content Security Policy" in message.text or message.type == "error":
            self.errors.append(f"{message.text} ({message.location.get('url')})")

    async def axe(self, label: str = "") -> None:
        """Check the page as it is now with axe-core (WCAG 2.1 A and AA rules)."""
        # A click that navigates returns before the next page is there: check that page.
        await self.page.wait_for_load_state("load")
        await self.page.add_script_tag(url=AXE_PATH)
        found: list[dict[str, Any]] = await self.page.evaluate(
            """async (tags) => {
                const result = await axe.run(document, {runOnly: {type: "tag", values: tags}});
                return result.violations.map(v => ({
                    id: v.id, impact: v.impact, help: v.help,
                    nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ")),
                }));
            }""",
            WCAG_21_AA,
        )
        where = label or self.page.url
        self.checked.append(where)
        for v in found:
            if v["impact"] in FAILING_IMPACTS:
                self.accessibility.append(
                    f"{where}: {v['id']} ({v['impact']}) {v['help']} {v['nodes']}"
                )

    def assert_clean(self) -> None:
        """No script error, no CSP violation, no serious or critical accessibility violation."""
        assert not self.errors, self.errors
        assert not self.accessibility, "\n".join(self.accessibility)

    async def screenshot(self, name: str, selector: str = "") -> None:
        """Keep the page (or the element of `selector`) in docs/ (AVIS_SCREENSHOTS=docs) as
        `name`, once its images are drawn."""
        if not SCREENSHOTS:
            return
        path = str(ROOT / SCREENSHOTS / name)
        await self.page.evaluate(
            """() => Promise.all([...document.images]
                .filter(i => i.loading !== "lazy" || i.getBoundingClientRect().top < innerHeight)
                .map(i => i.decode().catch(() => null)))"""
        )
        if selector:
            await self.page.locator(selector).screenshot(path=path)
        else:
            await self.page.screenshot(path=path, full_page=True)


async def _serve_axe(route: Route) -> None:
    await route.fulfill(body=AXE.read_bytes(), content_type="text/javascript")


async def no_overflow(page: Page, width: int) -> None:
    """The page fits its `width` (no scrolling sideways), measured once its stylesheet applies:
    a check made between the page's text and its styles measures a page nobody sees."""
    await page.wait_for_load_state("load")
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{page.url} is wider than {width}px by {overflow}px"


@contextlib.asynccontextmanager
async def watched_page(
    browser: Browser,
    base_url: str,
    language: str,
    width: int = 1280,
    failure: Path | None = None,
    zone: str = "UTC",
) -> AsyncIterator[Watched]:
    """A new context and page in `language` at `width`, its clock in time zone `zone`, axe-core
    at hand; on a failure its screenshot goes to `failure`."""
    context = await browser.new_context(
        locale=language,
        timezone_id=zone,
        viewport={"width": width, "height": 900},
        base_url=base_url,
    )
    await context.route(f"**{AXE_PATH}", _serve_axe)
    page = await context.new_page()
    watched = Watched(context, page)
    try:
        yield watched
    except BaseException:
        if failure is not None:
            with contextlib.suppress(Exception):
                await page.screenshot(path=str(failure), full_page=True)
        raise
    finally:
        await context.close()


async def focused(page: Page) -> dict[str, str]:
    """What has the keyboard focus: its tag, id, type, name and text."""
    return dict(
        await page.evaluate(
            """() => {
                const e = document.activeElement;
                return {tag: e.tagName.toLowerCase(), id: e.id || "", type: e.type || "",
                        name: e.name || "",
                        value: e.value || "", text: (e.innerText || e.value || "").trim()};
            }"""
        )
    )


async def tab_to(
    page: Page, *, text: str = "", id: str = "", name: str = "", limit: int = 150
) -> None:
    """Press Tab until the focus is on the element with this text (or id, or form name)."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        now = await focused(page)
        if (id and now["id"] == id) or (text and now["text"] == text):
            return
        if name and now["name"] == name:
            return
    raise AssertionError(f"Tab never reached {text or id or name!r}")


async def arrow_to(page: Page, id: str, limit: int = 30) -> None:
    """In a group of radio buttons, press the down arrow until `id` is focused (and chosen)."""
    for _ in range(limit):
        if (await focused(page))["id"] == id:
            return
        await page.keyboard.press("ArrowDown")
    raise AssertionError(f"the arrows never reached {id!r}")


# --- the board's and the console's stories, set up through the services' APIs ---------------

T = TypeVar("T")
COORDINATOR = "coordinator-1"


async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str, stack: ServiceStack, timeout: float = 60
) -> T:
    """The first non-empty answer of `check`, polled until `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not in time\n{stack.tails()}")
        await asyncio.sleep(0.3)


async def add_reviewer(stack: ServiceStack, specialty: str, language: str, capacity: int) -> str:
    """A new specialist in the directory; their id."""
    reviewer = unique("rev-test")
    body = {
        "id": reviewer,
        "display_name": f"Test specialist {reviewer[-4:]}",
        "specialties": [specialty],
        "languages": [language],
        "capacity": capacity,
    }
    async with stack.client("review", COORDINATOR, "coordinator") as review:
        created = await review.post("/v1/reviewers", json=body)
    assert created.status_code == 201, created.text
    return reviewer


async def file_case(
    stack: ServiceStack,
    *,
    sub: str = "patient-1",
    specialty: str = "haematology",
    language: str = "en",
    submit: bool = True,
    email: str = "",
    partner_id: str | None = None,
) -> tuple[str, str]:
    """A case with one record, submitted unless told; its id and reference."""
    role = "partner" if partner_id else "patient"
    patient = {
        "given_name": "Alex",
        "family_name": unique("Moreau"),
        "birth_date": "1970-02-03",
        "email": email or f"{unique('alex')}@example.org",
        "preferred_language": language,
    }
    async with stack.client("intake", sub, role, partner_id=partner_id) as intake:  # type: ignore[arg-type]
        created = await intake.post(
            "/v1/cases", json=case_body(specialty=specialty, patient=patient)
        )
        assert created.status_code == 201, created.text
        case = created.json()
        added = await intake.post(
            f"/v1/cases/{case['case_id']}/documents", **upload(pdf(unique("lab")))
        )
        assert added.status_code == 201, added.text
        if submit:
            scopes = ("review", "share_with_partner") if partner_id else ("review",)
            sent = await intake.post(
                f"/v1/cases/{case['case_id']}/submit", json=consent_body(*scopes)
            )
            assert sent.status_code == 200, sent.text
    return case["case_id"], case["reference"]


async def assignments_of(stack: ServiceStack, case_id: str) -> list[dict[str, Any]]:
    """The case's assignments, as coordinators see them."""
    async with stack.client("review", COORDINATOR, "coordinator") as review:
        page = await review.get("/v1/assignments", params={"case_id": case_id})
    assert page.status_code == 200, page.text
    return list(page.json()["items"])


async def declined_case(stack: ServiceStack) -> tuple[str, str, str]:
    """A haematology case in English, declined by the only specialist who fits and waiting in
    review's queue, and a new specialist at capacity 0 who may take it by hand: the case's id,
    reference and that specialist's id."""
    spare = await add_reviewer(stack, "haematology", "en", capacity=0)
    case_id, reference = await file_case(stack)

    async def assigned() -> dict[str, Any] | None:
        return next(
            (a for a in await assignments_of(stack, case_id) if a["status"] == "assigned"), None
        )

    first = await eventually(assigned, "the first assignment", stack)
    async with stack.client("review", first["reviewer_id"], "reviewer") as reviewer:
        declined = await reviewer.post(
            f"/v1/assignments/{first['id']}/decline",
            json={"reason_code": "outside_expertise", "reason": "Not my field"},
        )
    assert declined.status_code == 200, declined.text

    async def waiting() -> bool:
        async with stack.client("review", COORDINATOR, "coordinator") as review:
            page = await review.get("/v1/queue", params={"specialty": "haematology", "limit": 100})
        return any(q["case_id"] == case_id for q in page.json()["items"])

    await eventually(waiting, "the declined case in the queue", stack)
    return case_id, reference, spare
