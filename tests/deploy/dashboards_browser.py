"""Open each dashboard of a running metrics store in Debian's chromium (driven by Playwright) and
check its panels are drawn: every panel has a chart (or a value) and none says "No data".

    python tests/deploy/dashboards_browser.py http://127.0.0.1:8428 [--screenshots docs]

Needs `playwright` (PyPI) and `chromium` (Debian); Playwright's own browser download is not used.
"""

import argparse
import json
import re
import sys
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def slug(title: str) -> str:
    """A file name for a dashboard's screenshot."""
    return re.sub(r"[^a-z]+", "-", title.lower().split(":")[0]).strip("-")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("--screenshots", type=Path)
    parser.add_argument("--range", default="30m")
    args = parser.parse_args()
    with urllib.request.urlopen(f"{args.base}/vmui/custom-dashboards") as answer:  # noqa: S310
        boards = json.load(answer)["dashboardsSettings"]
    failures = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1400})
        page.goto(f"{args.base}/vmui/#/dashboards?g0.range_input={args.range}")
        for index, board in enumerate(boards):
            page.locator(".vm-predefined-panels-tabs__tab").nth(index).click()
            page.wait_for_timeout(1000)
            headers = page.locator(".vm-predefined-dashboard-header")
            for i in range(headers.count()):  # open every row (vmui opens the first only)
                if "header_open" not in (headers.nth(i).get_attribute("class") or ""):
                    headers.nth(i).locator(".vm-predefined-dashboard-header__title").click()
                    page.wait_for_timeout(300)
            panels = page.locator(".vm-predefined-panel")
            expected = sum(len(row["panels"]) for row in board["rows"])
            page.wait_for_timeout(4000)  # the queries answer and the charts draw
            drawn = panels.locator(".vm-line-chart").count()
            empty = [
                panels.nth(i).inner_text().splitlines()[0]
                for i in range(panels.count())
                if "No data" in panels.nth(i).inner_text()
            ]
            print(f"{board['title']}: {panels.count()} panels, {drawn} charts, no data: {empty}")
            if panels.count() < expected or empty or drawn < expected:
                failures.append(board["title"])
            if args.screenshots:
                path = args.screenshots / f"dashboard-{slug(board['title'])}.png"
                page.screenshot(path=str(path), full_page=True)
                print(f"  screenshot {path}")
        browser.close()
    print("failed:", failures if failures else "none")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
