"""The second reader's workspace: the opinions they read before release (their list), one
reading with the version to read and the comments that went back, and the two answers: agree
(the opinion is released naming both) or comment (the first specialist answers with a new
version). The first specialist opens the same page from their workspace to read the comments.

Review decides who may read and answer (the two specialists; another reviewer is refused there)
and records each read in the case's access trail; web only passes the reviewer's own token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, Response

from avis.shared.events import Specialty, Urgency
from avis.shared.text import ID_PATTERN
from avis.web.api import Checked, Pages, see, tell, token
from avis.web.board import Coordinator
from avis.web.models import OPINION_SECTIONS
from avis.web.service import SecondReadingCalls
from avis.web.specialist import Reviewer

router = APIRouter(include_in_schema=False)
PREFIX = "/second-readings"
BOARD = "/board/second-reading"
AssignmentId = Annotated[str, Path(pattern=ID_PATTERN)]
COMMENTS_MAX = 20_000


def _home(assignment_id: str) -> str:
    return f"{PREFIX}/{assignment_id}"


@router.get(BOARD)
async def rules_page(request: Request, web: Pages, session: Coordinator) -> HTMLResponse:
    """The coordinators' rules: the specialties and urgencies whose opinions are read twice."""
    found = await SecondReadingCalls(web.platform).rules(token=token(session))
    return web.render(
        request,
        "board/second_reading.html",
        chosen=set(found.get("specialties", [])) | set(found.get("urgencies", [])),
        specialties=list(Specialty),
        urgencies=list(Urgency),
    )


@router.post(BOARD, dependencies=[Checked])
async def set_rules(request: Request, web: Pages, session: Coordinator) -> Response:
    """Replace the rules with the boxes ticked (unknown values are left out)."""
    form = await request.form()
    specialties = [s for s in form.getlist("specialty") if s in set(Specialty)]
    urgencies = [u for u in form.getlist("urgency") if u in set(Urgency)]
    calls = SecondReadingCalls(web.platform)
    await tell(
        session,
        "second.rules_saved",
        calls.set_rules,
        specialties=[str(s) for s in specialties],
        urgencies=[str(u) for u in urgencies],
    )
    return see(BOARD)


@router.get(PREFIX)
async def readings(request: Request, web: Pages, session: Reviewer) -> HTMLResponse:
    """The opinions waiting for the signed-in specialist as their second reader."""
    found = await SecondReadingCalls(web.platform).mine(token=token(session))
    return web.render(request, "specialist/second_readings.html", rows=found.items)


@router.get(PREFIX + "/{assignment_id}")
async def reading(
    request: Request, web: Pages, session: Reviewer, assignment_id: AssignmentId
) -> HTMLResponse:
    """The version to read and the comments; the answers for the second reader while it is
    theirs to read."""
    shown = await SecondReadingCalls(web.platform).reading(
        token=token(session), assignment_id=assignment_id
    )
    assert session.identity is not None
    second = shown.second_reader_id == session.identity.sub
    return web.render(
        request,
        "specialist/second_reading.html",
        reading=shown,
        sections=OPINION_SECTIONS,
        answer=second and shown.state == "reading",
        first=shown.first_reader_id == session.identity.sub,
        comments_max=COMMENTS_MAX,
    )


@router.post(PREFIX + "/{assignment_id}/agree", dependencies=[Checked])
async def agree(web: Pages, session: Reviewer, assignment_id: AssignmentId) -> Response:
    """Agree: the opinion goes to the report, naming both specialists."""
    calls = SecondReadingCalls(web.platform)
    await tell(session, "second.agreed", calls.agree, assignment_id=assignment_id)
    return see(_home(assignment_id))


@router.post(PREFIX + "/{assignment_id}/comment", dependencies=[Checked])
async def comment(
    web: Pages,
    session: Reviewer,
    assignment_id: AssignmentId,
    text: Annotated[str, Form()] = "",
) -> Response:
    """Return comments the first specialist must answer with a new version."""
    if not text.strip():
        session.notify("error", "second.comment_incomplete")
        return see(_home(assignment_id))
    calls = SecondReadingCalls(web.platform)
    await tell(
        session,
        "second.commented",
        calls.comment,
        assignment_id=assignment_id,
        text=text.strip()[:COMMENTS_MAX],
    )
    return see(_home(assignment_id))
