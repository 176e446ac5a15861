"""Request bodies at every service's door: a body over its route's limit is a 413 problem before
any route or token check looks at it, whether its size is declared or streamed, and every
operation that takes a body declares the 413 and the 408."""

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, Request

from avis.shared.bodies import BodyLimits
from avis.shared.runtime import Runtime
from avis.shared.security import Principal, authenticated
from avis.shared.settings import CommonSettings

LIMIT = 4096


def test_limits_go_by_method_and_route() -> None:
    limits = BodyLimits(100, {"/v1/cases/{case_id}/documents": 5000})
    assert limits.of("POST", "/v1/cases") == 100
    assert limits.of("PATCH", "/v1/cases/c-1") == 100
    assert limits.of("POST", "/v1/cases/c-1/documents") == 5000
    assert limits.of("POST", "/v1/cases/c-1/documents/d-1") == 100
    assert limits.of("POST", "/v1/cases/a/b/documents") == 100  # a parameter is one segment
    assert limits.of("GET", "/v1/cases") is None
    assert limits.of("DELETE", "/v1/cases/c-1") is None


def chunks(size: int) -> AsyncIterator[bytes]:
    async def parts() -> AsyncIterator[bytes]:
        for _ in range(size // 1024):
            yield b"y" * 1024

    return parts()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A runtime's app called in process; its lifespan never runs, so nothing connects."""
    router = APIRouter()

    @router.post("/v1/echo")
    async def echo(request: Request, who: Annotated[Principal, Depends(authenticated)]) -> int:
        return len(await request.body())

    @router.post("/v1/knock")
    async def knock() -> str:
        return "no body read"

    @router.get("/v1/read")
    async def read() -> str:
        return "ok"

    settings = CommonSettings(
        service_name="bodies-check",
        log_format="json",
        jwt_secret="s" * 40,  # type: ignore[arg-type]
        http_max_body_bytes=LIMIT,
    )
    app = Runtime(settings).create_app("Bodies check", [router])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://avis.test") as client:
        yield client


async def test_a_body_over_the_limit_is_refused_before_the_token_is_checked(
    http: httpx.AsyncClient,
) -> None:
    for path in ("/v1/echo", "/v1/knock"):
        for body in (b"x" * (LIMIT + 1), chunks(LIMIT + 1024)):
            refused = await http.post(path, content=body)
            assert refused.status_code == 413, (path, refused.text)
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["type"].endswith("/request-too-large")
    within = await http.post("/v1/echo", content=b"x" * LIMIT)
    assert within.status_code == 401
    streamed = await http.post("/v1/knock", content=chunks(LIMIT))
    assert streamed.status_code == 200 and streamed.json() == "no body read"
    assert (await http.get("/v1/read")).status_code == 200


async def test_every_operation_with_a_body_declares_413_and_408(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]
    for path in ("/v1/echo", "/v1/knock"):
        responses = paths[path]["post"]["responses"]
        for status in ("408", "413"):
            content = responses[status]["content"]
            assert content["application/problem+json"]["schema"]["$ref"].endswith("ProblemDetail")
    assert not {"408", "413"} & set(paths["/v1/read"]["get"]["responses"])
    assert not {"408", "413"} & set(paths["/healthz"]["get"]["responses"])
