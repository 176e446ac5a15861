"""Fixtures of the review integration tests: one review app per test module
(tests/support/review.py)."""

from collections.abc import AsyncIterator

import pytest

from tests.support.review import ReviewStack, review_settings, running_review


@pytest.fixture(scope="module")
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[ReviewStack]:
    """One review app per module; a module may set REVIEW_SETTINGS to override settings."""
    async with running_review(
        review_settings(**getattr(request.module, "REVIEW_SETTINGS", {}))
    ) as s:
        yield s
