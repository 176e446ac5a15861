"""Fixtures of the notify integration tests: one notify app per test module
(tests/support/notify.py)."""

from collections.abc import AsyncIterator

import pytest

from tests.support.notify import NotifyStack, running_notify


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[NotifyStack]:
    """One notify app per module."""
    async with running_notify() as s:
        yield s
