"""The page a claim link of an email opens: the patient of a case a partner filed makes it
theirs, after sign-in, with the one-time secret of the link (intake keeps only its digest)."""

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response

from avis.web import rules
from avis.web.api import CaseId, Checked, Pages, Person, see, token
from avis.web.service import Refused

router = APIRouter(include_in_schema=False)

# The secret as intake mints it (URL-safe base64 of 32 random bytes); nothing else reaches intake.
Secret = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{32,128}$")]


@router.get("/claim/{case_id}/{secret}")
async def claim_page(
    request: Request, web: Pages, session: Person, case_id: CaseId, secret: Secret
) -> HTMLResponse:
    """What claiming the case means, and the button that does it (a link alone changes nothing:
    mail scanners open links)."""
    return web.render(request, "claim.html", case_id=case_id, secret=secret)


@router.post("/claim/{case_id}/{secret}", dependencies=[Checked])
async def claim(web: Pages, session: Person, case_id: CaseId, secret: Secret) -> Response:
    """Claim the case as the person signed in; then its page."""
    try:
        await web.platform.claim(token=token(session), case_id=case_id, secret=secret)
    except Refused as exc:
        if exc.status == 401:
            raise
        session.notify("error", rules.claim_refusal(exc.status))
        return see("/cases")
    session.notify("ok", "case.claimed")
    return see(f"/cases/{case_id}")
