"""People's sign-in through the OpenID provider (Ory Hydra), with the identity server (Ory
Kratos) checking passwords and second factors: the `SignIn` seam's implementation, and web's
side of the provider's login, consent and logout requests.

Web is the provider's login, consent and logout screens. A person's password and codes go from
the browser straight to the identity server (web renders its form, which posts there); web
only asks the identity server who holds the browser's session, and reads the person's role from
the identity's admin metadata, which the person cannot edit. Web is a public client of the
provider: the code it gets back is worth nothing without the PKCE verifier it keeps in the
person's session (S256; the provider refuses `plain`).
"""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import jwt
from pydantic import ValidationError

from avis.web import rules
from avis.web.models import Identity
from avis.web.settings import Settings
from avis.web.signin import SignedIn, Started

LOGIN_PATH = "/oidc/login"
CALLBACK_PATH = "/signin/callback"
TIMEOUT_SECONDS = 10.0


class SignInUnavailable(Exception):
    """The provider or the identity server did not answer as expected."""


class ChallengeGone(Exception):
    """The provider no longer knows this login, consent or logout request (used or expired)."""


class OidcSignIn:
    """Sign-in by the authorization-code flow with PKCE, against the provider and its identity
    server (AVIS_WEB_SIGNIN=oidc)."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self.issuer = settings.oidc_issuer.rstrip("/") + "/"
        self.admin = settings.oidc_admin_url.rstrip("/")
        self.identity = settings.identity_url.rstrip("/")
        self.identity_admin = settings.identity_admin_url.rstrip("/")
        self.redirect_uri = settings.base_url + CALLBACK_PATH
        self._http = httpx.AsyncClient(timeout=TIMEOUT_SECONDS, transport=transport)

    async def close(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    @property
    def form_origins(self) -> tuple[str, ...]:
        """Where the sign-in page's form posts and is redirected (the page's form-action)."""
        return (rules.origin(self.identity), rules.origin(self.issuer))

    # --- the seam ---

    def identities(self) -> Sequence[Identity]:
        """None to pick: people sign in with their own credentials."""
        return ()

    def start(self) -> Started:
        """The provider's authorization URL for web's client, with a fresh state and an S256
        challenge of a fresh verifier."""
        state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        query = {
            "client_id": self.settings.oidc_client_id,
            "response_type": "code",
            "scope": "openid",
            "redirect_uri": self.redirect_uri,
            "audience": self.settings.jwt_audience,
            "state": state,
            "code_challenge": rules.pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
        return Started(f"{self.issuer}oauth2/auth?{urllib.parse.urlencode(query)}", state, verifier)

    async def complete(self, form: Mapping[str, str]) -> SignedIn | None:
        """Exchange the provider's code with the PKCE verifier; the person its access token
        names. None if the provider refuses."""
        answer = await self._call(
            "POST",
            f"{self.issuer}oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": form.get("code", ""),
                "redirect_uri": self.redirect_uri,
                "client_id": self.settings.oidc_client_id,
                "code_verifier": form.get("verifier", ""),
            },
        )
        if answer.status_code != 200:
            return None
        token = str(answer.json().get("access_token", ""))
        try:
            # Straight from the provider's token endpoint: the services check its signature.
            claims = jwt.decode(token, options={"verify_signature": False})
            identity = Identity(
                sub=claims["sub"], role=claims.get("role"), partner_id=claims.get("partner_id")
            )
        except (jwt.InvalidTokenError, KeyError, ValidationError):
            return None
        return SignedIn(identity, token)

    async def end(self, cookies: str) -> str:
        """End the browser's identity-server session; then the provider's sign-out, which
        returns to web's sign-in page."""
        await self.end_identity_session(cookies)
        return f"{self.issuer}oauth2/sessions/logout"

    # --- the provider's requests ---

    async def login(self, challenge: str, cookies: str) -> str:
        """Where the browser goes for this login request: the identity server's form while its
        session is missing or lacks the second factor a professional needs, else back to the
        provider with the request accepted (or refused, for an identity without a role)."""
        request = await self._challenge("login", challenge)
        back = f"{self.settings.base_url}{LOGIN_PATH}?" + urllib.parse.urlencode(
            {"login_challenge": challenge}
        )
        answer = await self._call(
            "GET", f"{self.identity}/sessions/whoami", headers={"Cookie": cookies}
        )
        if answer.status_code == 401:
            return self._identity_login(back)
        if answer.status_code == 403:  # its highest factor not given yet
            return self._identity_login(back, second_factor=True)
        if answer.status_code != 200:
            raise SignInUnavailable(f"whoami: {answer.status_code}")
        session = answer.json()
        identity = await self._identity(session["identity"]["id"])
        try:
            person = rules.person_claims(identity["id"], identity.get("metadata_admin"))
        except rules.NotAPerson:
            return await self._reject("login", challenge, "this identity has no role here")
        aal = session.get("authenticator_assurance_level")
        if rules.second_factor_missing(person.role, aal):
            if "totp" not in (identity.get("credentials") or {}):
                return await self._reject("login", challenge, "no second factor enrolled")
            return self._identity_login(back, second_factor=True)
        if request.get("skip") and request.get("subject") != person.subject:
            return await self._reject("login", challenge, "another person's session")
        return await self._accept(
            "login",
            challenge,
            {
                "subject": person.subject,
                "remember": False,
                "acr": aal,
                "context": {"identity_id": identity["id"]},
            },
        )

    async def consent(self, challenge: str) -> str:
        """Accept the consent of web's own client (first party: no screen) with the person's
        role and partner, read again from the identity's admin metadata, in the access token;
        refuse any other client."""
        request = await self._challenge("consent", challenge)
        client = (request.get("client") or {}).get("client_id")
        if client != self.settings.oidc_client_id:
            return await self._reject("consent", challenge, "only web's own client is served")
        identity_id = (request.get("context") or {}).get("identity_id")
        if not isinstance(identity_id, str):
            return await self._reject("consent", challenge, "no identity for this sign-in")
        identity = await self._identity(identity_id)
        try:
            person = rules.person_claims(identity["id"], identity.get("metadata_admin"))
        except rules.NotAPerson:
            return await self._reject("consent", challenge, "this identity has no role here")
        if person.subject != request.get("subject"):
            return await self._reject("consent", challenge, "the subject changed")
        audience = self.settings.jwt_audience
        return await self._accept(
            "consent",
            challenge,
            {
                "grant_scope": [s for s in request.get("requested_scope") or [] if s == "openid"],
                "grant_access_token_audience": [
                    a for a in request.get("requested_access_token_audience") or [] if a == audience
                ],
                "remember": False,
                "session": {"access_token": person.token_claims(), "id_token": {}},
            },
        )

    async def logout(self, challenge: str, cookies: str) -> str:
        """The provider's sign-out: the identity server's session ends too."""
        await self._challenge("logout", challenge)
        await self.end_identity_session(cookies)
        return await self._accept("logout", challenge, None)

    async def login_flow(self, flow_id: str, cookies: str) -> dict[str, Any] | None:
        """The identity server's login flow the browser is in (None: gone or not its own)."""
        return await self.flow("login", flow_id, cookies)

    def flow_start(self, kind: str) -> str:
        """Where the browser starts a new recovery (or settings) flow of the identity server."""
        return f"{self.identity}/self-service/{kind}/browser"

    async def flow(self, kind: str, flow_id: str, cookies: str) -> dict[str, Any] | None:
        """The identity server's login, recovery or settings flow the browser is in (None: gone,
        or not this browser's)."""
        answer = await self._call(
            "GET",
            f"{self.identity}/self-service/{kind}/flows",
            params={"id": flow_id},
            headers={"Cookie": cookies},
        )
        if answer.status_code != 200:
            return None
        flow: dict[str, Any] = answer.json()
        return flow

    async def end_identity_session(self, cookies: str) -> None:
        """End the identity server's session this browser holds, if any (one still waiting
        for its second factor too), by the identity server's own logout token."""
        if not cookies:
            return
        answer = await self._call(
            "GET", f"{self.identity}/self-service/logout/browser", headers={"Cookie": cookies}
        )
        if answer.status_code != 200:
            return  # no session
        await self._call(
            "GET",
            f"{self.identity}/self-service/logout",
            params={"token": answer.json()["logout_token"]},
            headers={"Accept": "application/json", "Cookie": cookies},
        )

    # --- plumbing ---

    def _identity_login(self, back: str, *, second_factor: bool = False) -> str:
        query = {"return_to": back} | ({"aal": rules.SECOND_FACTOR} if second_factor else {})
        return f"{self.identity}/self-service/login/browser?{urllib.parse.urlencode(query)}"

    async def _identity(self, identity_id: str) -> dict[str, Any]:
        answer = await self._call(
            "GET", f"{self.identity_admin}/admin/identities/{urllib.parse.quote(identity_id)}"
        )
        if answer.status_code != 200:
            raise SignInUnavailable(f"identity: {answer.status_code}")
        identity: dict[str, Any] = answer.json()
        return identity

    async def _challenge(self, kind: str, challenge: str) -> dict[str, Any]:
        answer = await self._call(
            "GET",
            f"{self.admin}/admin/oauth2/auth/requests/{kind}",
            params={f"{kind}_challenge": challenge},
        )
        if answer.status_code in (404, 410):
            raise ChallengeGone(kind)
        if answer.status_code != 200:
            raise SignInUnavailable(f"{kind} request: {answer.status_code}")
        request: dict[str, Any] = answer.json()
        return request

    async def _accept(self, kind: str, challenge: str, body: dict[str, Any] | None) -> str:
        return await self._answer(kind, "accept", challenge, body)

    async def _reject(self, kind: str, challenge: str, why: str) -> str:
        body = {"error": "access_denied", "error_description": why}
        return await self._answer(kind, "reject", challenge, body)

    async def _answer(
        self, kind: str, verb: str, challenge: str, body: dict[str, Any] | None
    ) -> str:
        answer = await self._call(
            "PUT",
            f"{self.admin}/admin/oauth2/auth/requests/{kind}/{verb}",
            params={f"{kind}_challenge": challenge},
            json=body,
        )
        if answer.status_code in (404, 410):
            raise ChallengeGone(kind)
        if answer.status_code != 200:
            raise SignInUnavailable(f"{kind} {verb}: {answer.status_code}")
        return str(answer.json()["redirect_to"])

    async def _call(self, method: str, url: str, **arguments: Any) -> httpx.Response:
        try:
            return await self._http.request(method, url, **arguments)
        except httpx.HTTPError as exc:
            raise SignInUnavailable(f"{method} {url}: {exc}") from exc
