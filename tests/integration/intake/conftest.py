"""Fixtures of the intake integration tests: one intake service per test module, on loopback,
over the real broker and store, with a database of its own."""

from collections.abc import AsyncIterator

import pytest

from tests.support.intake import Intake, running_intake


@pytest.fixture(scope="module")
async def intake() -> AsyncIterator[Intake]:
    """The intake service of this test module."""
    async with running_intake() as service:
        yield service
