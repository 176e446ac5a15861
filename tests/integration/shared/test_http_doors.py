"""A service's HTTP doors over loopback: operations endpoints, tokens refused with problems."""

import base64
import json
import time
from typing import Annotated

import httpx
import jwt
import pytest
from fastapi import APIRouter, Depends

from avis.shared.runtime import Runtime
from avis.shared.security import Principal, mint_token, require_roles
from avis.shared.settings import CommonSettings
from tests.support.basics import JWT_SECRET, eventually, serve

pytestmark = pytest.mark.infra


def b64(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


async def test_doors_and_token_refusals(settings: CommonSettings) -> None:
    router = APIRouter()

    @router.get("/v1/whoami")
    async def whoami(
        who: Annotated[Principal, Depends(require_roles("patient", "coordinator"))],
    ) -> dict[str, str]:
        return {"sub": who.sub, "role": who.role}

    runtime = Runtime(settings)
    claims = {"sub": "p-1", "role": "patient", "aud": "avis"}
    tokens = {
        "forged": jwt.encode({**claims, "exp": time.time() + 60}, "another-secret-" + "y" * 40),
        "expired": jwt.encode({**claims, "exp": time.time() - 3600}, JWT_SECRET),
        "alg-none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({**claims, 'exp': 2e9})}.",
        "wrong-audience": jwt.encode(
            {**claims, "aud": "other", "exp": time.time() + 60}, JWT_SECRET
        ),
        "garbage": "not-a-token",
    }
    async with (
        serve(runtime.create_app("t", [router])) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        assert (await http.get("/healthz")).json()["status"] == "ok"
        await eventually(lambda: runtime.kafka_started)
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        metrics = await http.get("/metrics")
        assert "avis_events_published_total" in metrics.text
        assert "paths" in (await http.get("/openapi.json")).json()
        assert (await http.get("/asyncapi.json")).json()["asyncapi"] == "3.0.0"

        good = mint_token(settings, "p-1", "patient")
        ok = await http.get("/v1/whoami", headers={"Authorization": f"Bearer {good}"})
        assert ok.json() == {"sub": "p-1", "role": "patient"}

        for name, token in tokens.items():
            refused = await http.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
            assert refused.status_code == 401, name
            assert refused.headers["content-type"].startswith("application/problem+json"), name
            assert refused.headers["www-authenticate"].startswith("Bearer"), name
            body = refused.json()
            assert body["status"] == 401 and body["detail"], name
            assert token not in refused.text, name
        missing = await http.get("/v1/whoami")
        assert missing.status_code == 401

        reviewer = mint_token(settings, "r-1", "reviewer")
        forbidden = await http.get("/v1/whoami", headers={"Authorization": f"Bearer {reviewer}"})
        assert forbidden.status_code == 403
        assert forbidden.json()["type"].endswith("forbidden")

        unknown = await http.get("/v1/nowhere")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"].startswith("application/problem+json")
