"""The test stack's OpenID provider (Ory Hydra, started by deploy/local/test.sh as by `make run`):
its addresses, web's token hook served where Hydra calls it, tokens got the way a partner's or a
service's machine gets them (client credentials), an ID token got through the authorization-code
flow with the test acting as the sign-in and consent screens over Hydra's admin API, and Hydra's
own access-token key, to sign tokens that differ from a real one in one claim or header only."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import uvicorn

from avis.web.main import create_app
from avis.web.settings import Settings as WebSettings
from tests.support.basics import ROOT

PORT = int(os.environ.get("AVIS_OIDC_PORT", "14444"))
ADMIN = f"http://127.0.0.1:{os.environ.get('AVIS_OIDC_ADMIN_PORT', '14445')}"
HOOK_PORT = int(os.environ.get("AVIS_OIDC_HOOK_PORT", "18010"))
ISSUER = f"http://127.0.0.1:{PORT}/"
JWKS = f"{ISSUER}.well-known/jwks.json"
STATE = Path(os.environ.get("AVIS_STATE_DIR", str(ROOT / ".local/test"))) / "oidc"
ACCESS_TOKEN_SET = "hydra.jwt.access-token"
REDIRECT = "http://127.0.0.1:9/callback"  # never opened: the code is read off the redirect


def partners() -> dict[str, dict[str, str]]:
    """The development partners' clients the stack seeded: partner id -> client id and secret."""
    loaded: dict[str, dict[str, str]] = json.loads((STATE / "partners.json").read_text())
    return loaded


def services() -> dict[str, dict[str, str]]:
    """The development services' machines' clients the stack seeded: name -> client id and
    secret."""
    loaded: dict[str, dict[str, str]] = json.loads((STATE / "services.json").read_text())
    return loaded


def hook_key() -> str:
    """The key Hydra presents to web's token hook."""
    return (STATE / "hook.env").read_text().strip().split("=", 1)[1]


@contextlib.asynccontextmanager
async def token_hook() -> AsyncIterator[None]:
    """Web (its token hook) served on the port the stack's Hydra calls, as `make run` serves it."""
    settings = WebSettings(
        avis_env="development",
        jwt_secret="w" * 40,
        token_hook_key=hook_key(),
        partner_clients={c["client_id"]: p for p, c in partners().items()},
        service_clients=[c["client_id"] for c in services().values()],
        live_events=False,
        log_format="json",
    )
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=HOOK_PORT, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def client_credentials(client_id: str, client_secret: str, audience: str = "avis") -> str:
    """An access token for a machine, by the client-credentials grant (RFC 6749 4.4)."""
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(
            f"{ISSUER}oauth2/token",
            data={"grant_type": "client_credentials", "audience": audience},
            auth=(client_id, client_secret),
        )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def _query(location: str, name: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)[name][0]


async def id_token(client_id: str, claims: dict[str, Any]) -> str:
    """An ID token Hydra issues to a client of that id (created for it, deleted after) for a
    person whose consent session carries `claims`: the test plays the sign-in and consent
    screens through the admin API, and an HTTP client plays the browser."""
    secret = secrets.token_urlsafe(32)
    client = {
        "client_id": client_id,
        "client_secret": secret,
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "scope": "openid",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    async with httpx.AsyncClient(timeout=30) as admin, httpx.AsyncClient(timeout=30) as browser:
        created = await admin.post(f"{ADMIN}/admin/clients", json=client)
        assert created.status_code == 201, created.text
        try:
            # The provider takes no code flow without a PKCE challenge (S256).
            verifier = secrets.token_urlsafe(48)
            digest = hashlib.sha256(verifier.encode()).digest()
            query = {
                "code_challenge": base64.urlsafe_b64encode(digest).decode().rstrip("="),
                "code_challenge_method": "S256",
                "client_id": client_id,
                "response_type": "code",
                "scope": "openid",
                "redirect_uri": REDIRECT,
                "state": secrets.token_urlsafe(12),
                "nonce": secrets.token_urlsafe(12),
            }
            asked = await browser.get(f"{ISSUER}oauth2/auth", params=query)
            login = _query(asked.headers["location"], "login_challenge")
            accepted = await admin.put(
                f"{ADMIN}/admin/oauth2/auth/requests/login/accept",
                params={"login_challenge": login},
                json={"subject": "person-1"},
            )
            asked = await browser.get(accepted.json()["redirect_to"])
            consent = _query(asked.headers["location"], "consent_challenge")
            accepted = await admin.put(
                f"{ADMIN}/admin/oauth2/auth/requests/consent/accept",
                params={"consent_challenge": consent},
                json={"grant_scope": ["openid"], "session": {"id_token": claims}},
            )
            back = await browser.get(accepted.json()["redirect_to"])
            code = _query(back.headers["location"], "code")
            tokens = await browser.post(
                f"{ISSUER}oauth2/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": REDIRECT,
                    "code_verifier": verifier,
                },
                auth=(client_id, secret),
            )
            assert tokens.status_code == 200, tokens.text
            token: str = tokens.json()["id_token"]
            return token
        finally:
            await admin.delete(f"{ADMIN}/admin/clients/{client_id}")


async def access_token_key() -> jwt.PyJWK:
    """Hydra's private key for access tokens (its admin API hands it out on loopback)."""
    async with httpx.AsyncClient(timeout=30) as admin:
        answer = await admin.get(f"{ADMIN}/admin/keys/{ACCESS_TOKEN_SET}")
    assert answer.status_code == 200, answer.text
    return jwt.PyJWK(answer.json()["keys"][0])


def resigned(
    token: str, key: jwt.PyJWK, *, header: dict[str, Any] | None = None, **claims: Any
) -> str:
    """`token`'s claims with `claims` over them (None removes one), signed again with `key`
    under `token`'s header with `header` over it."""
    original = jwt.get_unverified_header(token)
    payload = jwt.decode(token, options={"verify_signature": False}) | claims
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": original["kid"], "typ": original.get("typ")} | (header or {})
    return jwt.encode(payload, key.key, algorithm=original["alg"], headers=headers)


def now() -> int:
    """The time as a JWT's claims write it."""
    return int(time.time())
