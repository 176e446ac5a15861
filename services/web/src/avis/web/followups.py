"""The specialist's follow-up questions: the ones waiting for them, soonest due first, and the
page of one, where they read the patient's question and answer it (review issues the answer to
reports, which adds it to the report as an addendum). The question is read from review with the
specialist's token, so each read is in the case's access trail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, Response

from avis.shared.clock import now
from avis.shared.text import ID_PATTERN
from avis.web.api import Checked, Pages, see, tell, token
from avis.web.models import Reading
from avis.web.specialist import Reviewer

router = APIRouter(prefix="/follow-ups", include_in_schema=False)
FollowUpId = Annotated[str, Path(pattern=ID_PATTERN)]
ANSWER_MAX = 2000


class FollowUpView(Reading):
    """A follow-up question as review shows it (its texts only in the read of the one)."""

    id: str
    case_id: str
    assignment_id: str
    number: int
    state: str
    asked_at: datetime
    due_at: datetime
    overdue: bool
    answered_at: datetime | None = None
    question: str | None = None
    answer: str | None = None


class FollowUpList(Reading):
    """A page of follow-up questions."""

    items: list[FollowUpView]
    next_cursor: str | None = None


@router.get("")
async def waiting(request: Request, web: Pages, session: Reviewer) -> HTMLResponse:
    """The follow-up questions waiting for the signed-in specialist, soonest due first."""
    url = f"{web.platform.review}/v1/follow-ups"
    found = await web.platform._get(url, token=token(session), state="open", limit="100")
    rows = FollowUpList.model_validate(found).items
    return web.render(request, "specialist/follow_ups.html", rows=rows, at=now())


@router.get("/{follow_up_id}")
async def one(
    request: Request, web: Pages, session: Reviewer, follow_up_id: FollowUpId
) -> HTMLResponse:
    """One follow-up question, to read and answer."""
    url = f"{web.platform.review}/v1/follow-ups/{follow_up_id}"
    response = await web.platform._call("GET", url, token=token(session))
    follow_up = FollowUpView.model_validate(response.json())
    return web.render(
        request, "specialist/follow_up.html", follow_up=follow_up, answer_max=ANSWER_MAX
    )


@router.post("/{follow_up_id}/answer", dependencies=[Checked])
async def answer(
    web: Pages,
    session: Reviewer,
    follow_up_id: FollowUpId,
    text: Annotated[str, Form()] = "",
) -> Response:
    """Answer the follow-up question: the report gets an addendum with it."""
    if not text.strip():
        session.notify("error", "follow_up.answer_empty")
        return see(f"{router.prefix}/{follow_up_id}")
    platform = web.platform

    async def send(*, token: str, follow_up_id: str, text: str) -> None:
        url = f"{platform.review}/v1/follow-ups/{follow_up_id}/answer"
        await platform._call("POST", url, token=token, json={"text": text})

    done = await tell(
        session, "follow_up.answered", send, follow_up_id=follow_up_id, text=text.strip()
    )
    return see(router.prefix if done else f"{router.prefix}/{follow_up_id}")
