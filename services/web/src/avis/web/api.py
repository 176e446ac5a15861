"""The pages (thin: read the session and the form, call the services, render).

Every POST carries the session's CSRF token; every page is rendered on the server in the
person's language; a service's refusal becomes plain words, never its raw problem body.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import date, tzinfo
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Request
from fastapi.dependencies.utils import request_params_to_args
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from avis.shared.events import Language, Question, Specialty, Urgency
from avis.shared.text import ID_PATTERN, UUID_PATTERN
from avis.web import rules
from avis.web.models import CONSENT_VERSION, DocumentKind, Draft
from avis.web.oidc_signin import OidcSignIn
from avis.web.service import Platform, Refused, Upload
from avis.web.settings import Settings
from avis.web.signin import SignedIn, SignIn
from avis.web.store import Session, Sessions
from avis.web.texts import Texts

router = APIRouter(include_in_schema=False)
UPLOAD_PATH = "/cases/{case_id}/documents"
FILES_PER_FORM = 5
POLL_SECONDS = 5
CaseId = Annotated[str, Path(pattern=UUID_PATTERN)]


class Web:
    """What the pages stand on (set by the app factory on `app.state.web`)."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: Sessions,
        platform: Platform,
        signin: SignIn,
        templates: Jinja2Templates,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.platform = platform
        self.signin = signin
        self.templates = templates

    @property
    def provided(self) -> bool:
        """Whether people sign in at the provider (not on web's own page)."""
        return isinstance(self.signin, OidcSignIn)

    def render(
        self,
        request: Request,
        name: str,
        status: int = 200,
        *,
        page_language: Language | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """A page in the session's language (or `page_language`, that of the person an emailed
        link was written to), with its CSRF token and pending notices."""
        session = session_of(request)
        texts = Texts(page_language or language_of(request), zone_of(request))
        return self.templates.TemplateResponse(
            request,
            name,
            {
                "t": texts,
                "lang": texts.language.value,
                "languages": rules.LANGUAGES,
                "session": session,
                "notices": session.take_notices() if session else [],
                "path": request.url.path,
                **context,
            },
            status_code=status,
        )


class NotSignedIn(Exception):
    """The page needs a signed-in person."""


class CsrfRefused(Exception):
    """A form came without this session's CSRF token."""


def web_of(request: Request) -> Web:
    """The app's pages (set by the app factory)."""
    web = getattr(request.app.state, "web", None)
    if not isinstance(web, Web):
        raise RuntimeError("app.state.web is not set; the app factory must set it")
    return web


def session_of(request: Request) -> Session | None:
    """The session the cookie middleware found or opened for this request."""
    session = request.scope.get("state", {}).get("session")
    return session if isinstance(session, Session) else None


def language_of(request: Request) -> Language:
    """The language of this request's page."""
    session = session_of(request)
    chosen = session.language if session else None
    return rules.choose_language(chosen, request.headers.get("accept-language"))


def zone_of(request: Request) -> tzinfo:
    """The time zone this request's page writes times in."""
    return rules.zone_of(request.cookies.get(rules.ZONE_COOKIE))


def path_holds(request: Request) -> bool:
    """Whether the request's path parameters are those its page takes (an invalid id names no
    page: 404 for anyone, before a sign-in is asked for)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return True
    fields, dependants = [], [route.dependant]
    while dependants:  # the page's own parameters and its dependencies'
        dependant = dependants.pop()
        fields.extend(dependant.path_params)
        dependants.extend(dependant.dependencies)
    return not request_params_to_args(fields, request.path_params)[1]


def current(request: Request) -> Session:
    """The session of a page (every page path has one)."""
    session = session_of(request)
    if session is None:
        raise RuntimeError("no session: the session middleware must run before the pages")
    return session


def signed_in(request: Request) -> Session:
    """The session of a signed-in person, or NotSignedIn (the sign-in page)."""
    session = current(request)
    if not session.signed_in:
        raise NotSignedIn()
    return session


async def checked(request: Request, csrf: Annotated[str, Form()] = "") -> None:
    """Refuse a form without this session's CSRF token."""
    if not rules.csrf_valid(current(request).csrf, csrf):
        raise CsrfRefused()


Pages = Annotated[Web, Depends(web_of)]
Current = Annotated[Session, Depends(current)]
Person = Annotated[Session, Depends(signed_in)]
Checked = Depends(checked)


def see(path: str) -> RedirectResponse:
    """After a form: go and see the result (303, so a reload repeats nothing)."""
    return RedirectResponse(path, status_code=303)


def token(session: Session) -> str:
    assert session.token is not None
    return session.token


@router.get("/")
async def home(session: Current) -> RedirectResponse:
    """The person's cases, or the sign-in page."""
    return RedirectResponse("/cases" if session.signed_in else "/signin", status_code=303)


@router.get("/signin")
async def signin_page(request: Request, web: Pages, session: Current) -> HTMLResponse:
    """Who signs in (development: a choice of seeded identities; else a button to the
    provider's sign-in)."""
    return web.render(
        request, "signin.html", identities=web.signin.identities(), provider=web.provided
    )


@router.post("/signin", dependencies=[Checked])
async def signin(request: Request, web: Pages, session: Current) -> Response:
    """Sign in as the person the form names (the session gets a new id), or go to the
    provider's sign-in, keeping what its return must match."""
    started = web.signin.start()
    if started is not None:
        session.pending = (started.state, started.verifier)
        return see(started.url)
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    return signed_in_as(web, session, await web.signin.complete(form))


def signed_in_as(web: Web, session: Session, done: SignedIn | None) -> Response:
    """Keep the person and their token in a renewed session; on to the page asked for."""
    if done is None:
        session.notify("error", "signin.refused")
        return see("/signin")
    web.sessions.renew(session)
    session.identity, session.token = done.identity, done.token
    after, session.after = session.after, None
    return see(rules.local_path(after, "/cases"))


@router.post("/signout", dependencies=[Checked])
async def signout(request: Request, web: Pages, session: Current) -> Response:
    """End the session, and what the sign-in keeps beyond it (the provider's, the identity
    server's)."""
    web.sessions.end(session)
    elsewhere = await web.signin.end(rules.identity_cookies(request.headers.get("cookie")))
    return see(elsewhere or "/signin")


@router.post("/language", dependencies=[Checked])
async def choose_language(
    session: Current,
    language: Annotated[str, Form()] = "",
    back: Annotated[str, Form()] = "/",
) -> Response:
    """Keep the language chosen for this session."""
    if language in rules.LANGUAGES:
        session.language = language
    return see(rules.local_path(back))


@router.get("/cases")
async def cases(request: Request, web: Pages, session: Person) -> Response:
    """The person's cases."""
    if session.identity is not None and session.identity.role in rules.HOMES:
        return see(rules.HOMES[session.identity.role])
    if session.identity is None or session.identity.role != "patient":
        return web.render(request, "role.html")
    page = await web.platform.list_cases(token=token(session))
    return web.render(request, "cases.html", cases=page.items)


@router.get("/cases/new")
async def new_case(
    request: Request, web: Pages, session: Person, step: str | None = None
) -> HTMLResponse:
    """One step of a new request."""
    draft = session.draft or Draft(key=str(uuid.uuid4()))
    session.draft = draft
    missing = rules.first_missing_step(draft)
    if step not in rules.STEPS or (missing is not None and _after(step, missing)):
        step = missing or rules.STEPS[-1]
    return _step_page(web, request, draft, step)


def _after(step: str | None, other: str) -> bool:
    return step is not None and rules.STEPS.index(step) > rules.STEPS.index(other)


def _step_page(
    web: Web, request: Request, draft: Draft, step: str, errors: Mapping[str, str] | None = None
) -> HTMLResponse:
    return web.render(
        request,
        "new.html",
        status=422 if errors else 200,
        draft=draft,
        step=step,
        steps=rules.STEPS,
        number=rules.STEPS.index(step) + 1,
        errors=errors or {},
        specialties=list(Specialty),
        questions=list(Question),
        urgencies=list(Urgency),
        today=date.today().isoformat(),
    )


@router.post("/cases/new/{step}", dependencies=[Checked])
async def new_case_step(request: Request, web: Pages, session: Person, step: str) -> Response:
    """Keep one step's answers; after the last, file the request as a draft case."""
    if step not in rules.STEPS:
        return see("/cases/new")
    draft = session.draft or Draft(key=str(uuid.uuid4()))
    form = await request.form()
    values = _step_values(step, form.getlist("questions"), form)
    try:
        draft = Draft.model_validate(draft.model_dump() | values)
    except ValidationError as exc:
        errors = {str(e["loc"][0]): "new.invalid" for e in exc.errors() if e["loc"]}
        return _step_page(web, request, draft, step, errors)
    errors = _required(step, draft)
    session.draft = draft
    if errors:
        return _step_page(web, request, draft, step, errors)
    missing = rules.first_missing_step(draft)
    if missing is not None:
        return see(f"/cases/new?step={missing}")
    if step != rules.STEPS[-1]:
        return see(f"/cases/new?step={rules.STEPS[rules.STEPS.index(step) + 1]}")
    case = await web.platform.create_case(token=token(session), draft=draft)
    session.draft = None
    session.notify("ok", "case.created")
    return see(f"/cases/{case.case_id}")


def _step_values(step: str, questions: list[Any], form: Mapping[str, Any]) -> dict[str, Any]:
    text = {k: v.strip() for k, v in form.items() if isinstance(v, str)}
    if step == "specialty":
        return {
            "specialty": text.get("specialty") or None,
            "urgency": text.get("urgency", "routine"),
        }
    if step == "questions":
        return {"questions": [q for q in questions if isinstance(q, str)]}
    if step == "summary":
        return {"clinical_summary": text.get("clinical_summary", "")}
    return {
        "given_name": text.get("given_name", ""),
        "family_name": text.get("family_name", ""),
        "birth_date": text.get("birth_date") or None,
        "email": text.get("email", ""),
        "preferred_language": text.get("preferred_language") or None,
        "physician_name": text.get("physician_name", ""),
        "institution_code": text.get("institution_code", ""),
        "physician_email": text.get("physician_email", ""),
    }


def _required(step: str, draft: Draft) -> dict[str, str]:
    wanted: dict[str, dict[str, Any]] = {
        "specialty": {"specialty": draft.specialty},
        "questions": {"questions": draft.questions},
        "summary": {"clinical_summary": draft.clinical_summary},
        "people": {
            "given_name": draft.given_name,
            "family_name": draft.family_name,
            "birth_date": draft.birth_date,
            "email": draft.email,
        },
    }
    return {name: "new.required" for name, value in wanted[step].items() if not value}


@router.get("/cases/{case_id}")
async def case_page(request: Request, web: Pages, session: Person, case_id: CaseId) -> HTMLResponse:
    """A case: where it stands, its records, what can be done next, and the report once ready."""
    case = await web.platform.get_case(token=token(session), case_id=case_id)
    actions = rules.case_actions(case.status, len(case.documents), erased=bool(case.erased_at))
    report = None
    if actions.report:
        report = await web.platform.report(token=token(session), case_id=case_id)
    requests = []
    if actions.answer:
        requests = await web.platform.open_requests(token=token(session), case_id=case_id)
    return web.render(
        request,
        "case.html",
        case=case,
        actions=actions,
        report=report,
        requests=requests,
        kinds=list(DocumentKind),
        consent_version=CONSENT_VERSION,
        poll_seconds=POLL_SECONDS,
    )


@router.get("/cases/{case_id}/timeline")
async def timeline(
    request: Request, web: Pages, session: Person, case_id: CaseId, seen: str = ""
) -> HTMLResponse:
    """The timeline alone, for the page's live updates; the whole page reloads only when the
    new status changes what it offers."""
    case = await web.platform.get_case(token=token(session), case_id=case_id)
    actions = rules.case_actions(case.status, len(case.documents), erased=bool(case.erased_at))
    response = web.render(
        request, "timeline.html", case=case, actions=actions, poll_seconds=POLL_SECONDS
    )
    if seen and rules.case_actions(seen, len(case.documents)) != actions:
        # The page offers something else now (the report, no more withdrawal): reload it all.
        response.headers["HX-Refresh"] = "true"
    return response


@router.post(UPLOAD_PATH, dependencies=[Checked])
async def upload(
    web: Pages,
    session: Person,
    case_id: CaseId,
    files: Annotated[list[Any], File()],
    kind: Annotated[str, Form()] = DocumentKind.OTHER.value,
) -> Response:
    """Add the chosen records to a draft; each refused one is said in plain words."""
    record_kind = DocumentKind(kind) if kind in set(DocumentKind) else DocumentKind.OTHER
    chosen = [f for f in files if getattr(f, "filename", None)][:FILES_PER_FORM]
    if not chosen:
        session.notify("error", "upload.none")
    for file in chosen:
        data = await file.read()
        record = Upload(file.filename, file.content_type or "", data, record_kind)
        await tell(session, "upload.done", web.platform.upload, case_id=case_id, upload=record)
    return see(f"/cases/{case_id}")


@router.post("/cases/{case_id}/submit", dependencies=[Checked])
async def submit(
    web: Pages,
    session: Person,
    case_id: CaseId,
    consent: Annotated[str, Form()] = "",
    consent_version: Annotated[str, Form()] = "",
    share_with_physician: Annotated[str, Form()] = "",
    international_review: Annotated[str, Form()] = "",
) -> Response:
    """Submit the case with consent to the text shown (refused without the box ticked), to
    sending the report to the physician named in the request if that box is ticked, and to a
    review through a translator if that one is."""
    if consent != "yes" or consent_version != CONSENT_VERSION:
        session.notify("error", "error.consent_required")
        return see(f"/cases/{case_id}")
    share = share_with_physician == "yes"
    await tell(
        session,
        "case.submitted",
        web.platform.submit,
        case_id=case_id,
        share_with_physician=share,
        international_review=international_review == "yes",
    )
    return see(f"/cases/{case_id}")


@router.post("/cases/{case_id}/withdraw", dependencies=[Checked])
async def withdraw(
    web: Pages, session: Person, case_id: CaseId, confirm: Annotated[str, Form()] = ""
) -> Response:
    """Withdraw the case, once the person has confirmed it."""
    if confirm != "yes":
        session.notify("error", "withdraw.unconfirmed")
        return see(f"/cases/{case_id}")
    return await _act(session, case_id, "withdrawn", web.platform.withdraw)


@router.post("/cases/{case_id}/requests/{request_id}/answer", dependencies=[Checked])
async def answer_request(
    web: Pages,
    session: Person,
    case_id: CaseId,
    request_id: Annotated[str, Path(pattern=ID_PATTERN)],
    text: Annotated[str, Form()] = "",
) -> Response:
    """Answer the specialist's request for more information (records are added above first)."""
    if not text.strip():
        session.notify("error", "answer.empty")
        return see(f"/cases/{case_id}")
    call = web.platform.answer_information
    await tell(session, "case.answered", call, case_id=case_id, request_id=request_id, text=text)
    return see(f"/cases/{case_id}")


@router.post("/cases/{case_id}/follow-ups", dependencies=[Checked])
async def ask_follow_up(
    web: Pages, session: Person, case_id: CaseId, text: Annotated[str, Form()] = ""
) -> Response:
    """Ask the specialist a follow-up question about the report."""
    if not text.strip():
        session.notify("error", "follow_up.empty")
        return see(f"/cases/{case_id}")
    await tell(
        session, "case.follow_up_asked", web.platform.ask_follow_up, case_id=case_id, text=text
    )
    return see(f"/cases/{case_id}")


async def _act(session: Session, case_id: str, done: str, call: Any) -> Response:
    await tell(session, f"case.{done}", call, case_id=case_id)
    return see(f"/cases/{case_id}")


async def tell(
    session: Session,
    done: str,
    call: Any,
    refusal: Callable[[int, str | None], str] = rules.problem_message,
    **arguments: Any,
) -> bool:
    """Call a service with the person's token; say the outcome on the next page in plain words,
    a refusal's as `refusal` words it (False: refused; a 401 signs the person in again)."""
    try:
        await call(token=token(session), **arguments)
    except Refused as exc:
        if exc.status == 401:
            raise
        session.notify("error", refusal(exc.status, exc.problem_type))
        return False
    session.notify("ok", done)
    return True


@router.get("/cases/{case_id}/report.pdf")
async def report_pdf(web: Pages, session: Person, case_id: CaseId) -> Response:
    """The report's PDF, passed through with the person's token."""
    download = await web.platform.report_pdf(token=token(session), case_id=case_id)
    return StreamingResponse(
        download.chunks, media_type=download.content_type, headers=download.headers
    )
