"""The specialist's workspace: the queue of the signed-in reviewer, accepting or declining, and a
case in three panes (summary and questions, the records in a viewer, the structured opinion
with its draft kept while typing), then corrections as new versions. On an international round
the summary is the translation into the specialist's language, and the case is accepted only
once it is done.

Review decides whose assignment it is (another reviewer's is refused there) and intake whose
records; web only passes the reviewer's own token. A record is served from its own route under
a sandbox policy, never as one of our pages; a PDF is shown as its pages drawn into pictures on
the server (`pdfpages.py`), so no script of the file runs and no PDF reader of the browser is
needed; a DICOM file is never served, only its technical facts are listed (`dicom.py`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from avis.shared.clock import now
from avis.shared.text import ID_PATTERN
from avis.web import rules
from avis.web.api import Checked, Pages, Web, see, signed_in, tell, token
from avis.web.dicom import Unreadable, technical_facts
from avis.web.middleware import CSP
from avis.web.models import (
    ASSESSMENTS,
    DECLINE_REASONS,
    OPINION_SECTIONS,
    AssignmentView,
    ClinicalView,
    OpinionForm,
)
from avis.web.pdfpages import MAX_PAGES, MAX_PDF_BYTES, Unrenderable, outline_of, picture_of
from avis.web.service import Refused, TranslationCalls
from avis.web.settings import Settings
from avis.web.store import OpinionDrafts, Session

router = APIRouter(prefix="/review", include_in_schema=False)
AssignmentId = Annotated[str, Path(pattern=ID_PATTERN)]
DOCUMENT_PATTERN = r"^[0-9a-f]{64}$"
DocumentId = Annotated[str, Path(pattern=DOCUMENT_PATTERN)]
# A DICOM file's header comes before its pixels: this much is read to list its facts.
DICOM_HEAD_BYTES = 1024 * 1024
# A draft unused this long is forgotten (the working day a development token lasts).
DRAFT_IDLE_SECONDS = 8 * 3600
SECTION_MAX = 20_000
# The workspace alone may frame this site's own pages: the sandboxed records.
WORKSPACE_CSP = CSP.replace("frame-ancestors", "frame-src 'self'; frame-ancestors")
INLINE = {"frame", "image", "pdf"}
PDF = "application/pdf"
PageNumber = Annotated[int, Path(ge=1, le=MAX_PAGES)]
CLOSED_ROWS = 20  # the reviewer's answered or ended assignments one queue page shows


def attach(app: FastAPI, settings: Settings) -> None:
    """Add the workspace's pages and its in-memory drafts to the app."""
    app.state.opinion_drafts = OpinionDrafts(
        idle_seconds=DRAFT_IDLE_SECONDS, max_drafts=settings.max_sessions
    )
    app.include_router(router)


def drafts_of(request: Request) -> OpinionDrafts:
    """The app's opinion drafts (set by `attach`)."""
    drafts = getattr(request.app.state, "opinion_drafts", None)
    if not isinstance(drafts, OpinionDrafts):
        raise RuntimeError("app.state.opinion_drafts is not set; specialist.attach must run")
    return drafts


def reviewer(session: Annotated[Session, Depends(signed_in)]) -> Session:
    """The session of a signed-in reviewer: the workspace is theirs alone."""
    if session.identity is None or session.identity.role != "reviewer":
        raise Refused(403, "forbidden")
    return session


Reviewer = Annotated[Session, Depends(reviewer)]
Drafts = Annotated[OpinionDrafts, Depends(drafts_of)]


def _sub(session: Session) -> str:
    assert session.identity is not None
    return session.identity.sub


def _home(assignment_id: str) -> str:
    return f"{router.prefix}/{assignment_id}"


@router.get("")
async def queue(request: Request, web: Pages, session: Reviewer) -> HTMLResponse:
    """The reviewer's open assignments, soonest due first (every one, however old the rest of
    their history), then the first page of the others: two lists read together, the open ones
    from review's keyed list of the reviewer's open work."""
    who = token(session)
    opened, first = await asyncio.gather(
        web.platform.my_assignments(token=who, statuses=rules.OPEN_ASSIGNMENTS),
        web.platform.my_assignments(token=who, limit=CLOSED_ROWS),
    )
    at = now()
    closed = [a for a in first.items if a.status not in rules.OPEN_ASSIGNMENTS]
    return web.render(
        request,
        "specialist/queue.html",
        open_rows=[(a, rules.due_state(a.status, a.due_at, a.overdue, at)) for a in opened.items],
        closed_rows=[(a, rules.due_state(a.status, a.due_at, a.overdue, at)) for a in closed],
    )


@router.get("/{assignment_id}")
async def workspace(
    request: Request,
    web: Pages,
    session: Reviewer,
    drafts: Drafts,
    assignment_id: AssignmentId,
    record: Annotated[str | None, Query(pattern=DOCUMENT_PATTERN)] = None,
) -> HTMLResponse:
    """The case in three panes (before acceptance: its summary, to accept or decline)."""
    assignment = await web.platform.assignment(token=token(session), assignment_id=assignment_id)
    return await _workspace(web, request, session, drafts, assignment, record=record)


async def _workspace(
    web: Web,
    request: Request,
    session: Session,
    drafts: OpinionDrafts,
    assignment: AssignmentView,
    *,
    record: str | None = None,
    form: OpinionForm | None = None,
    errors: dict[str, str] | None = None,
) -> HTMLResponse:
    actions = rules.review_actions(assignment.status)
    clinical = sent = viewer = translated = None
    step = rules.case_translation(assignment.translations)
    if actions.decide or actions.read:
        clinical = await web.platform.case_for_review(
            token=token(session), case_id=assignment.case_id
        )
        if step is not None and not rules.translation_pending(step):
            translated = await TranslationCalls(web.platform).translation(
                token=token(session), translation_id=step.id
            )
    if actions.correct:
        sent = await web.platform.opinion(token=token(session), assignment_id=assignment.id)
    kept = drafts.get(_sub(session), assignment.case_id)
    if form is None:
        form = kept or (sent.form() if sent else OpinionForm())
    if clinical is not None and actions.read and record:
        viewer = await _viewer(web, session, assignment, clinical, record)
    response = web.render(
        request,
        "specialist/workspace.html",
        status=422 if errors else 200,
        assignment=assignment,
        due=rules.due_state(assignment.status, assignment.due_at, assignment.overdue, now()),
        actions=actions,
        clinical=clinical,
        translation_pending=rules.translation_pending(step),
        translated=translated,
        sent=sent,
        form=form,
        kept=kept is not None,
        errors=errors or {},
        viewer=viewer,
        assessments=ASSESSMENTS,
        sections=OPINION_SECTIONS,
        reasons=DECLINE_REASONS,
        section_max=SECTION_MAX,
    )
    response.headers["Content-Security-Policy"] = WORKSPACE_CSP
    return response


async def _viewer(
    web: Web, session: Session, assignment: AssignmentView, clinical: ClinicalView, record: str
) -> dict[str, Any] | None:
    """What the viewer shows of one record of the case (None: not one of its records)."""
    document = next((d for d in clinical.documents if d.document_id == record), None)
    if document is None:
        return None
    kind = rules.record_view(document.content_type)
    shown: dict[str, Any] = {"document": document, "kind": kind, "facts": None}
    shown["src"] = f"{_home(assignment.id)}/records/{document.document_id}"
    if kind == "dicom":
        try:
            head = await web.platform.record_head(
                token=token(session),
                case_id=assignment.case_id,
                document_id=document.document_id,
                limit=DICOM_HEAD_BYTES,
            )
            shown["facts"] = technical_facts(head)
        except Unreadable:
            shown["facts"] = []
    elif kind == "pdf":
        shown["pages"], shown["total"], shown["problem"] = [], 0, None
        try:
            data = await _pdf(web, session, assignment, document.document_id)
            pages = await outline_of(data)
            shown["pages"] = [(n, w, h) for n, (w, h) in enumerate(pages.sizes, start=1)]
            shown["total"] = pages.total
        except Unrenderable as exc:
            shown["problem"] = f"review.pdf.{exc.reason}"
    return shown


async def _pdf(web: Web, session: Session, assignment: AssignmentView, document_id: str) -> bytes:
    """A PDF record of the case, whole (one byte over the limit says it is too large)."""
    return await web.platform.record_head(
        token=token(session),
        case_id=assignment.case_id,
        document_id=document_id,
        limit=MAX_PDF_BYTES + 1,
        content_type=PDF,
    )


@router.get("/{assignment_id}/viewer/{document_id}")
async def viewer(
    request: Request,
    web: Pages,
    session: Reviewer,
    assignment_id: AssignmentId,
    document_id: DocumentId,
) -> Response:
    """The viewer pane alone, for the page's own update (without it: the whole workspace)."""
    if not request.headers.get("hx-request"):
        return see(f"{_home(assignment_id)}?record={document_id}#viewer")
    assignment = await web.platform.assignment(token=token(session), assignment_id=assignment_id)
    if not rules.review_actions(assignment.status).read:
        raise Refused(409, "assignment-state")
    clinical = await web.platform.case_for_review(token=token(session), case_id=assignment.case_id)
    shown = await _viewer(web, session, assignment, clinical, document_id)
    return web.render(request, "specialist/viewer.html", assignment=assignment, viewer=shown)


@router.get("/{assignment_id}/records/{document_id}")
async def record(
    web: Pages,
    session: Reviewer,
    assignment_id: AssignmentId,
    document_id: DocumentId,
    download: bool = False,
) -> Response:
    """A PDF, an image or a text record, inline under a sandbox: no script of the file runs,
    and the browser never takes it for one of our pages (`download`: as a file to save, for a
    browser that shows no PDF in a sandbox). A DICOM file is not served."""
    assignment = await web.platform.assignment(token=token(session), assignment_id=assignment_id)
    if not rules.review_actions(assignment.status).read:
        raise Refused(409, "assignment-state")
    served = await web.platform.record(
        token=token(session),
        case_id=assignment.case_id,
        document_id=document_id,
        shown=lambda content_type: rules.record_view(content_type) in INLINE,
    )
    name = rules.inline_name(document_id, served.content_type)
    media = served.content_type
    headers = served.headers | {
        "Content-Security-Policy": rules.SANDBOX_CSP,
        "Content-Disposition": f'{"attachment" if download else "inline"}; filename="{name}"',
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "SAMEORIGIN",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    if media == "text/plain":
        media = "text/plain; charset=utf-8"
    return StreamingResponse(served.chunks, media_type=media, headers=headers)


@router.get("/{assignment_id}/records/{document_id}/pages/{number}")
async def pdf_page(
    request: Request,
    web: Pages,
    session: Reviewer,
    assignment_id: AssignmentId,
    document_id: DocumentId,
    number: PageNumber,
) -> Response:
    """One page of a PDF record drawn as a PNG on the server: the file's scripts never run."""
    assignment = await web.platform.assignment(token=token(session), assignment_id=assignment_id)
    if not rules.review_actions(assignment.status).read:
        raise Refused(409, "assignment-state")
    data = await _pdf(web, session, assignment, document_id)
    try:
        page = await picture_of(data, number)
    except Unrenderable as exc:
        status = 404 if exc.reason == "no_page" else 422
        return web.render(request, "error.html", status=status, message=f"review.pdf.{exc.reason}")
    name = f"record-{document_id[:12]}-page-{number}.png"
    headers = {
        "Content-Security-Policy": rules.SANDBOX_CSP,
        "Content-Disposition": f'inline; filename="{name}"',
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    return Response(page.png, media_type="image/png", headers=headers)


@router.post("/{assignment_id}/accept", dependencies=[Checked])
async def accept(web: Pages, session: Reviewer, assignment_id: AssignmentId) -> Response:
    """Take the case on."""
    await tell(session, "review.accepted", web.platform.accept, assignment_id=assignment_id)
    return see(_home(assignment_id))


@router.post("/{assignment_id}/decline", dependencies=[Checked])
async def decline(
    web: Pages,
    session: Reviewer,
    assignment_id: AssignmentId,
    reason_code: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Give the case back, with a reason (the coordinator reads the words)."""
    if reason_code not in DECLINE_REASONS or not reason.strip():
        session.notify("error", "review.decline_incomplete")
        return see(_home(assignment_id))
    done = await tell(
        session,
        "review.declined",
        web.platform.decline,
        assignment_id=assignment_id,
        code=reason_code,
        reason=reason.strip()[:2000],
    )
    return see(router.prefix if done else _home(assignment_id))


@router.post("/{assignment_id}/ask", dependencies=[Checked])
async def ask(
    web: Pages,
    session: Reviewer,
    assignment_id: AssignmentId,
    text: Annotated[str, Form()] = "",
) -> Response:
    """Ask the patient for a missing record or a precision; the review waits for the answer."""
    if not text.strip():
        session.notify("error", "review.ask_incomplete")
        return see(_home(assignment_id))
    await tell(
        session,
        "review.asked",
        web.platform.ask_information,
        assignment_id=assignment_id,
        text=text.strip()[:2000],
    )
    return see(_home(assignment_id))


async def _opinion_form(request: Request) -> OpinionForm:
    form = await request.form()
    fields = {}
    for name in OpinionForm.model_fields:
        value = form.get(name)
        fields[name] = value[:SECTION_MAX] if isinstance(value, str) else ""
    return OpinionForm(**fields)


@router.post("/{assignment_id}/draft", dependencies=[Checked])
async def save_draft(
    request: Request, web: Pages, session: Reviewer, drafts: Drafts, assignment_id: AssignmentId
) -> Response:
    """Keep the opinion as typed so far (the page saves it while the reviewer types)."""
    form = await _opinion_form(request)
    assignment = await web.platform.assignment(token=token(session), assignment_id=assignment_id)
    actions = rules.review_actions(assignment.status)
    if not (actions.write or actions.correct):
        raise Refused(409, "assignment-state")
    drafts.put(_sub(session), assignment.case_id, form)
    if request.headers.get("hx-request"):
        return web.render(request, "specialist/draft.html", saved_at=now(), kept=True)
    session.notify("ok", "review.draft_saved")
    return see(f"{_home(assignment_id)}#opinion")


@router.post("/{assignment_id}/opinion", dependencies=[Checked])
async def send_opinion(
    request: Request, web: Pages, session: Reviewer, drafts: Drafts, assignment_id: AssignmentId
) -> Response:
    """Send the first version of the opinion (every section written)."""
    return await _send(request, web, session, drafts, assignment_id, correction=False)


@router.post("/{assignment_id}/correction", dependencies=[Checked])
async def send_correction(
    request: Request, web: Pages, session: Reviewer, drafts: Drafts, assignment_id: AssignmentId
) -> Response:
    """Send a corrected opinion: a new version, the earlier ones kept."""
    return await _send(request, web, session, drafts, assignment_id, correction=True)


async def _send(
    request: Request,
    web: Web,
    session: Session,
    drafts: OpinionDrafts,
    assignment_id: str,
    *,
    correction: bool,
) -> Response:
    form = await _opinion_form(request)
    second = (await request.form()).get("second_reading") == "on"
    assignment = await web.platform.assignment(token=token(session), assignment_id=assignment_id)
    person = _sub(session)
    errors = rules.opinion_errors(form)
    if errors:
        drafts.put(person, assignment.case_id, form)
        return await _workspace(web, request, session, drafts, assignment, form=form, errors=errors)
    done = await tell(
        session,
        "review.corrected" if correction else "review.sent",
        web.platform.send_opinion,
        assignment_id=assignment_id,
        form=form,
        correction=correction,
        second_reading=second,
    )
    if done:
        drafts.drop(person, assignment.case_id)
    else:
        drafts.put(person, assignment.case_id, form)
    return see(_home(assignment_id))
