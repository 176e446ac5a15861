"""The write rate limit of a running service (intake, served on loopback over the test stack's
broker and store): a caller's writes past the limit get a 429 problem with `Retry-After` and
write nothing, while another caller, and the first one's reads, go on."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from avis.intake.main import create_app
from avis.intake.settings import Settings
from avis.shared.security import mint_token
from avis.shared.settings import CommonSettings
from tests.support.basics import make_settings

pytestmark = pytest.mark.infra

LIMIT = 3
DRAFT = {
    "patient": {
        "given_name": "Ada",
        "family_name": "Lovelace",
        "birth_date": "1970-12-10",
        "email": "ada@example.org",
        "preferred_language": "en",
    },
    "physician": {"name": "Dr Babbage", "institution_code": "HOSP-LDN-01"},
    "specialty": "cardiology",
    "urgency": "routine",
    "questions": ["diagnosis_clarification"],
    "clinical_summary": "Short of breath on stairs for six months.",
}


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """`app` served by uvicorn on a free loopback port, lifespan included; yields its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def ready(http: httpx.AsyncClient) -> None:
    """Wait until the service answers /readyz (store and broker connected)."""
    for _ in range(300):
        if (await http.get("/readyz")).status_code == 200:
            return
        await asyncio.sleep(0.2)
    pytest.fail("intake did not become ready")


def draft(http: httpx.AsyncClient, token: str) -> Any:
    """Draft a case as the patient of `token`, with a fresh Idempotency-Key."""
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
    return http.post("/v1/cases", json=DRAFT, headers=headers)


async def test_a_caller_past_the_limit_waits_and_another_goes_on(
    settings: CommonSettings,
) -> None:
    # Intake's own settings class, so its key-service certificate comes from the environment.
    limited = make_settings(settings.service_name, Settings, rate_limit_writes=f"{LIMIT}/minute")
    first = mint_token(limited, "rate-patient-1", "patient")
    second = mint_token(limited, "rate-patient-2", "patient")
    async with (
        served(create_app(limited)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        await ready(http)
        for _ in range(LIMIT):
            assert (await draft(http, first)).status_code == 201
        refused = await draft(http, first)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["cache-control"] == "no-store"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.json()["type"].endswith("/too-many-requests")
        mine = await http.get("/v1/cases", headers={"Authorization": f"Bearer {first}"})
        assert mine.status_code == 200
        assert len(mine.json()["items"]) == LIMIT  # the refused write wrote nothing
        assert (await draft(http, second)).status_code == 201
        # Without a valid token the address is the caller: its own count, its own limit.
        for _ in range(LIMIT):
            assert (await http.post("/v1/cases", json=DRAFT)).status_code == 401
        assert (await http.post("/v1/cases", json=DRAFT)).status_code == 429
        assert (await draft(http, second)).status_code == 201
