"""The API docs pages work without the internet: every script, style and icon they load is
served by the service itself (a hospital network often has no way out to a CDN)."""

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from avis.shared.runtime import Runtime
from avis.shared.settings import CommonSettings

ASSET = re.compile(r'(?:src|href)="([^"]+)"')


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A service's app called in process; its lifespan never runs, so nothing connects."""
    settings = CommonSettings(service_name="docs-check", log_format="json", jwt_secret="s" * 40)
    app = Runtime(settings).create_app("Docs check")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://avis.test") as client:
        yield client


@pytest.mark.parametrize(
    ("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc")]
)
async def test_docs_pages_load_only_what_the_service_serves(
    http: httpx.AsyncClient, page: str, script: str
) -> None:
    response = await http.get(page)
    assert response.status_code == 200
    assets = ASSET.findall(response.text)
    assert any(script in a for a in assets), assets
    assert not re.search(r"https?://", response.text), "the page names an outside address"
    for asset in assets:
        assert asset.startswith("/"), asset
        loaded = await http.get(asset)
        assert loaded.status_code == 200, asset
        assert len(loaded.content) > 1000, asset


async def test_swagger_ui_never_sends_the_spec_to_an_outside_validator(
    http: httpx.AsyncClient,
) -> None:
    page = (await http.get("/docs")).text
    assert re.search(r'"validatorUrl":\s*null', page), "the online validator badge is on"
    assert (await http.get("/openapi.json")).status_code == 200
