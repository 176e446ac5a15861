"""The one check of a problem body (RFC 9457): the status, the media type, the platform's type
URI (of one slug, if given), a title and a detail, and the fields it reports in `errors`."""

from typing import Any

import httpx

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPES = "https://avis.health/problems/"


def assert_problem(
    response: httpx.Response, status: int, slug: str | None = None, *, fields: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The problem body of `response`, checked to be a clear one of `status` (and of `slug`,
    reporting at least `fields`, if given)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith(PROBLEM_TYPES), body
    if slug is not None:
        assert body["type"] == f"{PROBLEM_TYPES}{slug}", body
    assert body["title"] and body["detail"], body
    reported = {e["field"] for e in body.get("errors") or []}
    assert set(fields) <= reported, reported
    return body
