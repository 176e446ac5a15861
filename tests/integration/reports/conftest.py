"""Fixtures of the reports integration tests: one reports app per test module
(tests/support/reports.py)."""

from collections.abc import AsyncIterator

import pytest

from tests.support.reports import ReportsStack, running_reports


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[ReportsStack]:
    """One reports app per test module."""
    async with running_reports() as running:
        yield running
