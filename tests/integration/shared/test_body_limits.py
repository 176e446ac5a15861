"""Every service refuses a request body over its route's limit with a 413 problem, before it
looks at the token (none is sent here), whether the body declares its size (Content-Length) or
streams it (chunked, no Content-Length); a body at the limit goes on to the token check (401).

One request per operation and way of sending, over loopback against the real servers: the
services' own limits (intake's record and JSON limits, the shared `http_max_body_bytes` for the
others), never a limit made up for the test. A service without an operation that takes a body
(reports) is sent its bodies with POST on its paths: refused the same, before the 405.
"""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from avis.intake.api import MULTIPART_SLACK
from avis.shared.settings import CommonSettings
from tests.support.basics import MONGO_URL, serve, skip_history
from tests.support.services import FILLER, READS, SERVICES

pytestmark = pytest.mark.infra

BODY_METHODS = ("post", "put", "patch")
PART = 64 * 1024


def limit_of(service: str, settings: Any, path: str) -> int:
    """The body limit of `path` as the service's settings set it."""
    if service == "intake":
        if path.endswith("/documents"):
            return int(settings.max_document_bytes) + MULTIPART_SLACK
        return int(settings.max_json_bytes)
    assert isinstance(settings, CommonSettings)
    return settings.http_max_body_bytes


def targets(spec: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(method, path with its parameters filled, whether the service has that operation) for
    every operation that takes a body, or POST on each path of a service that has none."""
    paths = {}
    for template, ops in spec["paths"].items():
        if template.startswith("/v1/"):
            path = template
            for param in {p["name"] for op in ops.values() for p in op.get("parameters", [])}:
                path = path.replace("{" + param + "}", FILLER)
            paths[path] = ops
    found = [
        (m.upper(), path, True) for path, ops in paths.items() for m in ops if m in BODY_METHODS
    ]
    return found or [("POST", path, False) for path in paths]


async def chunked(size: int) -> AsyncIterator[bytes]:
    """`size` bytes streamed in parts, so the request has no Content-Length."""
    sent = 0
    while sent < size:
        part = min(PART, size - sent)
        sent += part
        yield b"x" * part


def assert_refused(answer: httpx.Response, where: str) -> None:
    assert answer.status_code == 413, (where, answer.status_code, answer.text[:300])
    assert answer.headers["content-type"].startswith("application/problem+json"), where
    body = answer.json()
    assert body["status"] == 413 and body["type"].endswith("/request-too-large"), where


@pytest.mark.parametrize("service", list(SERVICES))
async def test_every_service_refuses_an_oversized_body_before_the_token(service: str) -> None:
    make, settings_of = SERVICES[service]
    settings = settings_of()
    await skip_history(f"avis-{settings.service_name}", READS[service])  # its own writes only
    try:
        async with (
            serve(make(settings)) as url,
            httpx.AsyncClient(base_url=url, timeout=60) as http,
        ):
            spec = (await http.get("/openapi.json")).json()
            sent = targets(spec)
            assert sent, "the service has paths to send bodies to"
            for method, path, declared in sent:
                limit = limit_of(service, settings, path)
                where = f"{method} {path} ({limit} bytes at most)"
                over = b"x" * (limit + 1)
                assert_refused(await http.request(method, path, content=over), where)
                streamed = await http.request(method, path, content=chunked(limit + 1))
                assert streamed.request.headers.get("transfer-encoding") == "chunked", where
                assert "content-length" not in streamed.request.headers, where
                assert_refused(streamed, f"{where}, chunked")
                if declared:
                    # At the limit the body passes, and the missing token is what is refused.
                    at_limit = await http.request(method, path, content=chunked(limit))
                    assert at_limit.status_code == 401, (where, at_limit.status_code)
    finally:
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
        await mongo.drop_database(settings.database)
        await mongo.close()
