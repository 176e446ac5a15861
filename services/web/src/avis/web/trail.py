"""The patient's privacy pages: who looked at my file, a case's access trail in plain words for
the person signed in (intake decides who may read it: the patient sees that a break-glass read
happened and why in general, never the coordinator's words), and the request for erasure."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from avis.web.api import CaseId, Checked, Pages, Person, see, tell, token
from avis.web.rules import TRAIL_ACTIONS, TRAIL_PURPOSES

router = APIRouter(include_in_schema=False)


@router.get("/cases/{case_id}/access")
async def access(request: Request, web: Pages, session: Person, case_id: CaseId) -> HTMLResponse:
    """Every read and write of the case's health data, oldest first."""
    trail = await web.platform.access_log(token=token(session), case_id=case_id)
    return web.render(
        request,
        "access.html",
        case_id=case_id,
        trail=trail.items,
        actions=TRAIL_ACTIONS,
        purposes=TRAIL_PURPOSES,
    )


@router.post("/cases/{case_id}/erasure", dependencies=[Checked])
async def request_erasure(
    web: Pages, session: Person, case_id: CaseId, confirm: Annotated[str, Form()] = ""
) -> Response:
    """Ask for the erasure of the case's data, once the person has confirmed it."""
    if confirm != "yes":
        session.notify("error", "erasure.unconfirmed")
        return see(f"/cases/{case_id}")
    await tell(session, "case.erasure_requested", web.platform.request_erasure, case_id=case_id)
    return see(f"/cases/{case_id}")
