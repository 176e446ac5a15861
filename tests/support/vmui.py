"""vmui, VictoriaMetrics' web UI, in Debian's chromium driven by Playwright: open each dashboard
(deploy/metrics/dashboards, served by the store), every row opened, and see which panels drew a
chart and which say "No data"; optionally keep a full-page screenshot of each.

Playwright's own browser download is not used: chromium comes from the distribution.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from playwright.async_api import FloatRect, Page, async_playwright

# Tall enough that the longest dashboard is on screen at once (vmui queries a panel only while
# it is in view), so the full-page screenshot shows every chart drawn.
VIEWPORT = {"width": 1600, "height": 4600}


@dataclass
class Drawn:
    """What one dashboard showed: the titles of panels with a chart, and of those with none."""

    charts: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)


def slug(title: str) -> str:
    """A file name for a dashboard's screenshot: 'Avis flow: ...' -> 'avis-flow'."""
    return re.sub(r"[^a-z]+", "-", title.lower().split(":")[0]).strip("-")


async def draw_dashboards(
    base: str, *, chromium: str, screenshots: Path | None = None, span: str = "5m"
) -> dict[str, Drawn]:
    """Each dashboard's title (before its colon) and what vmui drew of it."""
    async with httpx.AsyncClient(timeout=10) as http:
        boards = (await http.get(f"{base}/vmui/custom-dashboards")).json()["dashboardsSettings"]
    found: dict[str, Drawn] = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
            await page.goto(f"{base}/vmui/#/dashboards?g0.range_input={span}")
            for index, board in enumerate(boards):
                await page.locator(".vm-predefined-panels-tabs__tab").nth(index).click()
                await _open_rows(page)
                found[board["title"].split(":")[0]] = await _panels(page)
                await page.evaluate("window.scrollTo(0, 0)")
                if screenshots is not None:
                    path = screenshots / f"dashboard-{slug(board['title'])}.png"
                    await page.screenshot(path=str(path), clip=await _content(page))
        finally:
            await browser.close()
    return found


async def _content(page: Page) -> FloatRect:
    """The page down to the dashboard's last row (the viewport is taller than most)."""
    bottom = await page.evaluate(
        "Math.max(...[...document.querySelectorAll('.vm-predefined-dashboard')]"
        ".map(row => row.getBoundingClientRect().bottom))"
    )
    return {
        "x": 0,
        "y": 0,
        "width": VIEWPORT["width"],
        "height": min(bottom + 24, VIEWPORT["height"]),
    }


async def _open_rows(page: Page) -> None:
    """vmui opens a dashboard's first row only: open the others. A pointer click on a closed
    row's header leaves it closed here (seen with vmui v1.151.0); the header's own click() opens
    it."""
    await page.wait_for_timeout(1000)
    headers = page.locator(".vm-predefined-dashboard > .vm-accordion-header")
    for i in range(await headers.count()):
        if "header_open" not in (await headers.nth(i).get_attribute("class") or ""):
            await headers.nth(i).evaluate("header => header.click()")
            await page.wait_for_timeout(300)


async def _panels(page: Page) -> Drawn:
    """Each panel, brought into view (vmui queries only the panels on screen): drawn once its
    chart has a legend (a series), empty if it says "No data" or answered without a series."""
    drawn = Drawn()
    panels = page.locator(".vm-predefined-panel")
    for i in range(await panels.count()):
        panel = panels.nth(i)
        await panel.scroll_into_view_if_needed()
        title = (await panel.locator(".vm-predefined-panel-header__title").inner_text()).strip()
        series = panel.locator(".vm-legend-item")
        for tick in range(60):  # until it draws, or has answered (no spinner) for 2 s
            if await series.count() or "No data" in await panel.inner_text():
                break
            if tick >= 8 and not await panel.locator(".vm-spinner").count():
                break
            await page.wait_for_timeout(250)
        if await series.count() and "No data" not in await panel.inner_text():
            drawn.charts.append(title)
        else:
            drawn.empty.append(title)
    return drawn
