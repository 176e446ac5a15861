"""The OpenID provider's token hook (thin): before the provider issues a client-credentials token,
it asks here which role and partner the client's machine acts for (rules.machine_claims). The
provider authenticates with the key of AVIS_WEB_TOKEN_HOOK_KEY; no password of ours is involved."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from avis.web import rules
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
    """Web's settings (the hook's key and the partners' clients)."""
    settings: Settings = request.app.state.web.settings
    return settings


Configured = Annotated[Settings, Depends(settings_of)]


@router.post(HOOK_PATH)
async def token_hook(
    body: TokenHook,
    settings: Configured,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """200 with the claims of a partner's machine; 204 (the token as is) for other grants; 403
    (no token) for a client of no partner; 401 without the provider's key; 404 when off."""
    key = settings.token_hook_key.get_secret_value()
    if not key:
        return Response(status_code=404)
    if not rules.hook_key_valid(key, authorization):
        return Response(status_code=401)
    try:
        claims = rules.machine_claims(
            body.request.client_id, body.request.grant_types, settings.partner_clients
        )
    except rules.MachineUnknown:
        return Response(status_code=403)
    if claims is None:
        return Response(status_code=204)
    session: dict[str, Any] = {"access_token": claims, "id_token": {}}
    return JSONResponse({"session": session})
