"""Open each dashboard of a running metrics store in Debian's chromium (driven by Playwright) and
check its panels are drawn: every panel has a chart and none says "No data".

    python -m tests.deploy.dashboards_browser http://127.0.0.1:8428 [--screenshots docs]

The test of the same over a live journey: tests/deploy/test_dashboards_live.py.
"""

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

from tests.support.vmui import draw_dashboards


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("--screenshots", type=Path)
    parser.add_argument("--range", default="30m")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    drawn = asyncio.run(
        draw_dashboards(
            args.base, chromium=args.chromium, screenshots=args.screenshots, span=args.range
        )
    )
    for board, seen in drawn.items():
        print(f"{board}: {len(seen.charts)} charts, no data: {seen.empty}")
    return 1 if any(seen.empty for seen in drawn.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
