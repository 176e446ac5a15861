"""The coordinators' page of the FHIR endpoints the physicians' copies are posted to: each
institution's code, whether its endpoint takes posts (or why it was disabled), its failed posts
in a row and the posts waiting for it; and, for a disabled one, the form that re-enables it.

Notify decides who may see and re-enable them (coordinators) and shows neither an endpoint's URL
nor a person; web only passes the coordinator's own token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response

from avis.shared.text import CODE_PATTERN
from avis.web import rules
from avis.web.api import Checked, Pages, see, tell, token
from avis.web.board import Coordinator
from avis.web.service import FhirEndpointCalls

router = APIRouter(include_in_schema=False)
PAGE = "/board/fhir-endpoints"
Institution = Annotated[str, Path(pattern=CODE_PATTERN)]


@router.get(PAGE)
async def endpoints(request: Request, web: Pages, session: Coordinator) -> HTMLResponse:
    """Every institution with an endpoint set, by code, with its state."""
    found = await FhirEndpointCalls(web.platform).endpoints(token=token(session))
    return web.render(request, "board/fhir_endpoints.html", rows=found.items)


@router.post(PAGE + "/{institution}/enable", dependencies=[Checked])
async def enable(web: Pages, session: Coordinator, institution: Institution) -> Response:
    """Re-enable the institution's endpoint (the posts that waited for it go at once), then
    back to the list, which says what came of it."""
    calls = FhirEndpointCalls(web.platform)
    await tell(
        session, "board.fhir.enabled", calls.enable, rules.fhir_refusal, institution=institution
    )
    return see(PAGE)
