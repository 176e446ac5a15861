"""The OpenID provider's doors (thin). Its token hook: before the provider issues a
client-credentials token, it asks here which role and partner the client's machine acts for
(rules.machine_claims: a partner's, or a service's as role service), authenticated with the key
of AVIS_WEB_TOKEN_HOOK_KEY. People's sign-in: web is the provider's login, consent and logout
screens, renders the identity server's form and takes the provider's code back
(avis.web.oidc_signin); no password of ours is involved."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from avis.web import api, rules
from avis.web.oidc_signin import CALLBACK_PATH, LOGIN_PATH, ChallengeGone, OidcSignIn
from avis.web.settings import Settings

router = APIRouter(include_in_schema=False)
HOOK_PATH = "/oidc/token-hook"


class HookedRequest(BaseModel):
    """The token request the provider describes (the parts we read)."""

    model_config = ConfigDict(extra="ignore")

    client_id: str = Field(max_length=200)
    grant_types: list[str] = Field(default_factory=list, max_length=10)


class TokenHook(BaseModel):
    """The provider's call (Ory Hydra's token hook body; its session is not read)."""

    model_config = ConfigDict(extra="ignore")

    request: HookedRequest


def settings_of(request: Request) -> Settings:
    """Web's settings (the hook's key and the partners' and services' clients)."""
    settings: Settings = request.app.state.web.settings
    return settings


Configured = Annotated[Settings, Depends(settings_of)]


@router.post(HOOK_PATH)
async def token_hook(
    body: TokenHook,
    settings: Configured,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """200 with the claims of a partner's or a service's machine; 204 (the token as is) for other
    grants; 403 (no token) for a client of neither; 401 without the provider's key; 404 when
    off."""
    key = settings.token_hook_key.get_secret_value()
    if not key:
        return Response(status_code=404)
    if not rules.hook_key_valid(key, authorization):
        return Response(status_code=401)
    try:
        claims = rules.machine_claims(
            body.request.client_id,
            body.request.grant_types,
            settings.partner_clients,
            settings.service_clients,
        )
    except rules.MachineUnknown:
        return Response(status_code=403)
    if claims is None:
        return Response(status_code=204)
    session: dict[str, Any] = {"access_token": claims, "id_token": {}}
    return JSONResponse({"session": session})


# --- people's sign-in: web as the provider's login, consent and logout screens ---


def people_signin(request: Request) -> OidcSignIn:
    """The provider's sign-in, when web is configured for it (else these doors are not found)."""
    signin = request.app.state.web.signin
    if not isinstance(signin, OidcSignIn):
        raise HTTPException(status_code=404)
    return signin


PeopleSignIn = Annotated[OidcSignIn, Depends(people_signin)]
Challenge = Annotated[str, Query(min_length=1, max_length=2000)]


def browser_cookies(request: Request) -> str:
    """The identity server's cookies the browser sent (its session, its forms' CSRF cookie)."""
    return rules.identity_cookies(request.headers.get("cookie"))


async def _go(answer: Awaitable[str]) -> Response:
    try:
        return RedirectResponse(await answer, status_code=303)
    except ChallengeGone:
        # Used already or expired: sign in again from the start.
        return RedirectResponse("/signin", status_code=303)


@router.get(LOGIN_PATH)
async def login(request: Request, signin: PeopleSignIn, login_challenge: Challenge) -> Response:
    """The provider asks who this browser is: the identity server's form until its session is
    enough for the person's role, then the provider again."""
    return await _go(signin.login(login_challenge, browser_cookies(request)))


@router.get("/oidc/consent")
async def consent(signin: PeopleSignIn, consent_challenge: Challenge) -> Response:
    """The provider asks what the token may say: web's own client, so no screen (first party);
    the person's role and partner come from the identity's admin metadata."""
    return await _go(signin.consent(consent_challenge))


@router.get("/oidc/logout")
async def logout(request: Request, signin: PeopleSignIn, logout_challenge: Challenge) -> Response:
    """The provider signs the browser out: the identity server's session ends as well."""
    return await _go(signin.logout(logout_challenge, browser_cookies(request)))


@router.get("/signin/password")
async def password_page(request: Request, signin: PeopleSignIn, flow: Challenge) -> Response:
    """The identity server's login form (password, or the second factor's code), rendered here
    and posted straight to it: no password or code passes through web."""
    web = request.app.state.web
    found = await signin.login_flow(flow, browser_cookies(request))
    if found is None:
        return RedirectResponse("/signin", status_code=303)
    page: Response = web.render(request, "signin_password.html", form=rules.identity_form(found))
    return page


Flow = Annotated[str, Query(max_length=2000)]


@router.get("/signin/recovery")
async def recovery_page(request: Request, signin: PeopleSignIn, flow: Flow = "") -> Response:
    """The identity server's recovery form (the address, then the code it emailed), rendered here
    and posted straight to it; without a flow (or a gone one), a new one."""
    return await _flow_page(request, signin, "recovery", flow, rules.RECOVERY)


@router.get("/signin/settings")
async def settings_page(request: Request, signin: PeopleSignIn, flow: Flow = "") -> Response:
    """The identity server's new-password form after recovery, rendered here and posted straight
    to it: the new password never passes through web."""
    return await _flow_page(request, signin, "settings", flow, rules.SETTINGS)


async def _flow_page(
    request: Request, signin: OidcSignIn, kind: str, flow: str, shown: rules.FlowKind
) -> Response:
    found = await signin.flow(kind, flow, browser_cookies(request)) if flow else None
    if found is None:
        return RedirectResponse(signin.flow_start(kind), status_code=303)
    page: Response = request.app.state.web.render(
        request, "signin_password.html", form=rules.identity_form(found, shown)
    )
    return page


@router.get(CALLBACK_PATH)
async def callback(
    request: Request,
    signin: PeopleSignIn,
    code: Annotated[str, Query(max_length=2000)] = "",
    state: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """The provider's return: the state must be this session's; the code is exchanged with the
    session's PKCE verifier for the person's token."""
    web = request.app.state.web
    session = api.current(request)
    pending, session.pending = session.pending, None
    if pending is None or not code or not rules.csrf_valid(pending[0], state):
        session.notify("error", "signin.refused")
        return RedirectResponse("/signin", status_code=303)
    done = await signin.complete({"code": code, "verifier": pending[1]})
    return api.signed_in_as(web, session, done)
