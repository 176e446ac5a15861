"""The translator's workspace: the open translations of their language pairs (their queue), and
one translation with its source text and the form for the translation (the clinical summary into
the specialist's language, or the opinion back into the patient's).

Review decides who may read, take and write a translation (its translator, or one of its pair
while it waits for anyone) and records each read and write in the case's access trail; web only
passes the translator's own token.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, Response

from avis.shared.text import ID_PATTERN
from avis.web.api import Checked, Pages, Person, see, tell, token
from avis.web.models import ASSESSMENTS, OPINION_SECTIONS
from avis.web.service import Refused, TranslationCalls
from avis.web.store import Session

router = APIRouter(include_in_schema=False)
PREFIX = "/translations"
TranslationId = Annotated[str, Path(pattern=ID_PATTERN)]
TEXT_MAX = 20_000


def translator(session: Person) -> Session:
    """The session of a signed-in translator: the workspace is theirs alone."""
    if session.identity is None or session.identity.role != "translator":
        raise Refused(403, "forbidden")
    return session


Translator = Annotated[Session, Depends(translator)]


def _home(translation_id: str) -> str:
    return f"{PREFIX}/{translation_id}"


@router.get(PREFIX)
async def queue(request: Request, web: Pages, session: Translator) -> HTMLResponse:
    """The translations waiting for the signed-in translator, soonest due first."""
    found = await TranslationCalls(web.platform).mine(token=token(session))
    rows = sorted(found.items, key=lambda t: (t.due_at, t.id))
    return web.render(request, "translator/queue.html", rows=rows)


@router.get(PREFIX + "/{translation_id}")
async def workspace(
    request: Request, web: Pages, session: Translator, translation_id: TranslationId
) -> HTMLResponse:
    """The source text and, once taken, the form for the translation."""
    shown = await TranslationCalls(web.platform).translation(
        token=token(session), translation_id=translation_id
    )
    return web.render(
        request,
        "translator/workspace.html",
        item=shown,
        sections=OPINION_SECTIONS,
        text_max=TEXT_MAX,
    )


@router.post(PREFIX + "/{translation_id}/take", dependencies=[Checked])
async def take(web: Pages, session: Translator, translation_id: TranslationId) -> Response:
    """Take the translation: it counts in the translator's load until done."""
    calls = TranslationCalls(web.platform)
    await tell(session, "translation.taken", calls.take, translation_id=translation_id)
    return see(_home(translation_id))


@router.post(PREFIX + "/{translation_id}/text", dependencies=[Checked])
async def write(
    request: Request, web: Pages, session: Translator, translation_id: TranslationId
) -> Response:
    """Submit the translation: the summary, or the opinion's sections (every one required)."""
    form = await request.form()
    values = {k: str(form.get(k, "")).strip()[:TEXT_MAX] for k in ("summary", "explanation")}
    sections = {k: str(form.get(k, "")).strip()[:TEXT_MAX] for k in OPINION_SECTIONS}
    assessment = str(form.get("assessment", ""))
    body: dict[str, Any]
    if form.get("way") == "to_patient":
        if assessment not in ASSESSMENTS or not values["explanation"] or not all(sections.values()):
            session.notify("error", "translation.incomplete")
            return see(_home(translation_id))
        diagnosis = {"assessment": assessment, "explanation": values["explanation"]}
        body = {"opinion": {"diagnosis": diagnosis, **sections}}
    else:
        if not values["summary"]:
            session.notify("error", "translation.incomplete")
            return see(_home(translation_id))
        body = {"summary": values["summary"]}
    calls = TranslationCalls(web.platform)
    await tell(session, "translation.done", calls.write, translation_id=translation_id, body=body)
    return see(_home(translation_id))
