"""People's sign-in on the test stack's OpenID provider (Hydra) and identity server (Kratos), as
`make run` wires them: web served where Hydra sends the browser (its login, consent and logout
screens, the token hook), the seeded people and their secrets, and a browser without a browser:
an HTTP client that keeps cookies, follows redirects and fills in the forms it is shown; the
recovery codes the identity server mails to the stack's SMTP sink."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import struct
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import httpx
import jwt
import uvicorn
from fastapi import FastAPI

from avis.web.main import create_app
from avis.web.settings import Settings as WebSettings
from avis.web.store import Session
from tests.support import notify, oidc

KRATOS = f"http://127.0.0.1:{os.environ.get('AVIS_KRATOS_PORT', '14433')}"
KRATOS_ADMIN = f"http://127.0.0.1:{os.environ.get('AVIS_KRATOS_ADMIN_PORT', '14434')}"
WEB = f"http://127.0.0.1:{oidc.HOOK_PORT}"
PEOPLE = oidc.STATE.parent / "kratos" / "people.json"


def people() -> dict[str, dict[str, Any]]:
    """The seeded people: subject -> email, password, role, partner_id, totp_secret."""
    loaded: dict[str, dict[str, Any]] = json.loads(PEOPLE.read_text())
    return loaded


def totp(secret: str, at: float | None = None) -> str:
    """The current RFC 6238 code of a base32 secret (SHA-1, 30 s, 6 digits)."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // 30)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return str((struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF) % 10**6).zfill(6)


@dataclass
class OidcWeb:
    """Web, signing people in through the provider, served where the provider calls it."""

    url: str
    app: FastAPI

    def session(self, browser: Browser) -> Session | None:
        """The web session the browser's cookie names."""
        found: Session | None = self.app.state.web.sessions.find(
            browser.http.cookies.get("avis_session"), touch=False
        )
        return found

    def token(self, browser: Browser) -> str | None:
        """The access token web keeps for the browser's person (None: not signed in)."""
        session = self.session(browser)
        return session.token if session is not None else None


@contextlib.asynccontextmanager
async def oidc_web(
    intake_url: str = "http://127.0.0.1:9", **overrides: Any
) -> AsyncIterator[OidcWeb]:
    """Web as `make run` configures it (AVIS_WEB_SIGNIN=oidc), on the port the stack's Hydra
    and Kratos send the browser to; its token hook answers Hydra too."""
    values: dict[str, Any] = {
        "avis_env": "development",
        "jwt_secret": "w" * 40,
        "signin": "oidc",
        "public_url": WEB,
        "oidc_issuer": oidc.ISSUER,
        "oidc_admin_url": oidc.ADMIN,
        "identity_url": KRATOS,
        "identity_admin_url": KRATOS_ADMIN,
        "token_hook_key": oidc.hook_key(),
        "partner_clients": {c["client_id"]: p for p, c in oidc.partners().items()},
        "service_clients": [c["client_id"] for c in oidc.services().values()],
        "intake_url": intake_url,
        "live_events": False,
        "log_format": "json",
        # The tests sign in many times from one address (the limit's own test sets its own).
        "signin_rate_limit": "10000/minute",
    }
    app = create_app(WebSettings(**(values | overrides)))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=oidc.HOOK_PORT, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield OidcWeb(WEB, app)
    finally:
        server.should_exit = True
        await task


class _Forms(HTMLParser):
    """The last POST form of a page (the page's own, after the header's): its action, its
    hidden fields and its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.inputs: list[dict[str, str]] = []
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "form" and found.get("method", "").lower() == "post":
            self.action, self._in_form = found.get("action", ""), True
            self.fields, self.inputs = {}, []
        elif tag in ("input", "button") and self._in_form:
            self.inputs.append(found | {"tag": tag})
            if found.get("type") == "hidden" and found.get("name"):
                self.fields[found["name"]] = found.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def form_of(page: httpx.Response) -> _Forms:
    """The page's form."""
    parsed = _Forms()
    parsed.feed(page.text)
    assert parsed.action, f"no form on {page.url}:\n{page.text[:2000]}"
    return parsed


class Browser:
    """Cookies, redirects followed, forms filled in and posted where they say."""

    def __init__(self) -> None:
        self.http = httpx.AsyncClient(
            follow_redirects=True, timeout=30, headers={"Accept-Language": "en"}
        )

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def begin(self, web: str = WEB) -> httpx.Response:
        """Open web's sign-in page and press its button: on to the identity server's form."""
        page = await self.http.get(f"{web}/signin")
        return await self.submit(page, {})

    async def submit(
        self, page: httpx.Response, values: dict[str, str], button: str | None = None
    ) -> httpx.Response:
        """Post the page's form with its hidden fields, `values` and the submit button named
        by its value (else the first)."""
        form = form_of(page)
        data = dict(form.fields) | values
        buttons = [i for i in form.inputs if i.get("type") == "submit" or i["tag"] == "button"]
        chosen = next((b for b in buttons if button is None or b.get("value") == button), None)
        if chosen and chosen.get("name"):
            data[chosen["name"]] = chosen.get("value", "")
        action = str(page.url.join(form.action or ""))
        return await self.http.post(action, data=data)

    async def password(self, page: httpx.Response, email: str, password: str) -> httpx.Response:
        """Fill in the identity server's password form."""
        return await self.submit(page, {"identifier": email, "password": password}, "password")

    async def code(self, page: httpx.Response, code: str) -> httpx.Response:
        """Fill in the identity server's second-factor form."""
        return await self.submit(page, {"totp_code": code}, "totp")

    async def sign_in(
        self, person: dict[str, Any], *, second_factor: bool = True
    ) -> httpx.Response:
        """The whole sign-in of a seeded person: password, then their code if they have one."""
        page = await self.password(await self.begin(), person["email"], person["password"])
        if person.get("totp_secret") and second_factor:
            page = await self.code(page, totp(person["totp_secret"]))
        return page

    async def identity_session(self) -> httpx.Response:
        """What the identity server says of this browser's session (whoami)."""
        return await self.http.get(f"{KRATOS}/sessions/whoami")


async def emailed_code(address: str, seconds: float = 30.0) -> str:
    """The recovery code the identity server's courier sent to `address` through the stack's
    SMTP sink (its newest mail), waited for until a deadline."""
    deadline = time.monotonic() + seconds
    while True:
        for msg in reversed(notify.mailbox(address)):
            body = msg.get_body(("plain", "html"))
            found = re.search(r"\b(\d{6})\b", body.get_content() if body else "")
            if found:
                return found.group(1)
        assert time.monotonic() < deadline, f"no code mailed to {address} in {seconds}s"
        await asyncio.sleep(0.25)


def claims(token: str) -> dict[str, Any]:
    """A token's claims (its signature is the services' to check)."""
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def asks_second_factor(page: httpx.Response) -> bool:
    """Whether the page is web's rendering of the identity server's second-factor form."""
    return page.url.path == "/signin/password" and 'name="totp_code"' in page.text


def shows(page: httpx.Response, text: str) -> bool:
    """Whether the page says `text` (HTML-escaped apostrophes aside)."""
    return text in re.sub(r"&#39;|&#x27;", "'", page.text)


async def new_person(metadata: dict[str, Any]) -> dict[str, Any]:
    """A person made in the identity server for one test (no second factor): email, password,
    identity id; `metadata` is its metadata_admin."""
    email = f"{uuid.uuid4().hex[:10]}@test.avis.local"
    password = secrets.token_urlsafe(18)
    async with httpx.AsyncClient(timeout=30) as admin:
        made = await admin.post(
            f"{KRATOS_ADMIN}/admin/identities",
            json={
                "schema_id": "person",
                "traits": {"email": email, "name": "Test Person"},
                "metadata_admin": metadata,
                "credentials": {"password": {"config": {"password": password}}},
            },
        )
    assert made.status_code == 201, made.text
    return {"email": email, "password": password, "identity_id": made.json()["id"]}


async def forget(person: dict[str, Any]) -> None:
    """Delete a test's person from the identity server."""
    async with httpx.AsyncClient(timeout=30) as admin:
        await admin.delete(f"{KRATOS_ADMIN}/admin/identities/{person['identity_id']}")


async def set_metadata_admin(person: dict[str, Any], metadata: dict[str, Any]) -> None:
    """What only the identity server's admin API may do: change a person's admin metadata."""
    async with httpx.AsyncClient(timeout=30) as admin:
        changed = await admin.patch(
            f"{KRATOS_ADMIN}/admin/identities/{person['identity_id']}",
            json=[{"op": "replace", "path": "/metadata_admin", "value": metadata}],
        )
    assert changed.status_code == 200, changed.text


async def edit_own_traits(person: dict[str, Any], traits: dict[str, Any]) -> httpx.Response:
    """The person edits their own profile through the identity server's settings flow (a native
    flow, signed in by password): the identity server's answer."""
    async with httpx.AsyncClient(base_url=KRATOS, timeout=30) as http:
        flow = (await http.get("/self-service/login/api")).json()
        done = await http.post(
            f"/self-service/login?flow={flow['id']}",
            json={
                "method": "password",
                "identifier": person["email"],
                "password": person["password"],
            },
        )
        assert done.status_code == 200, done.text
        token = {"X-Session-Token": done.json()["session_token"]}
        settings = (await http.get("/self-service/settings/api", headers=token)).json()
        return await http.post(
            f"/self-service/settings?flow={settings['id']}",
            json={"method": "profile", "traits": traits},
            headers=token,
        )
