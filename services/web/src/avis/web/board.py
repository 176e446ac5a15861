"""The coordinator's board (thin, like api.py): cases by status and due date, the queue and hand
assignment with the matcher's reasons, the reviewer and translator directory, the translations
in progress by due date, a case's access trail and its clinical content read for a stated
reason, a legal hold set and lifted and the case's erasure, each with its reason, dead-letter
depth, and partners' deliveries with replay. Every call goes out with the coordinator's own
token; the services decide."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from avis.shared.events import Language, Specialty
from avis.shared.text import CODE_PATTERN, ID_PATTERN
from avis.web import rules
from avis.web.api import CaseId, Checked, Pages, Person, Web, see, tell, token
from avis.web.models import AssignmentView, CaseView, QueuedCase, TranslationView
from avis.web.service import Platform, Refused, TranslationCalls
from avis.web.store import Session

router = APIRouter(include_in_schema=False)
CASE_STATUSES = (
    "draft",
    "submitted",
    "assigned",
    "in_review",
    "awaiting_information",
    "report_ready",
    "withdrawn",
)
ASSIGNMENT_STATUSES = ("assigned", "accepted", "declined", "completed", "cancelled")
# A case may wait in review's queue while intake shows it submitted, or assigned (declined).
WAITABLE = ("submitted", "assigned")
# The board's first page of assignments and of cases: each row is a read of the services'
# store, and the board is an overview (the lists behind it are paged).
BOARD_ROWS = 20
QUEUE_PAGES = 5  # a case is looked for in the queue's first pages of its specialty and urgency
ReviewerId = Annotated[str, Form(pattern=CODE_PATTERN)]
Id = Annotated[str, Path(pattern=ID_PATTERN)]
PartnerId = Annotated[str | None, Query(pattern=ID_PATTERN)]
Said = Annotated[str, Form()]  # a reason, as typed (intake says which length it takes)


def coordinator(session: Person) -> Session:
    """The session of a signed-in coordinator; anyone else is refused in plain words."""
    if session.identity is None or session.identity.role != "coordinator":
        raise Refused(403, "forbidden")
    return session


Coordinator = Annotated[Session, Depends(coordinator)]


def one_of(value: str | None, allowed: tuple[str, ...]) -> str | None:
    """`value` if it is one of `allowed`, else None (a filter the board does not know: all)."""
    return value if value in allowed else None


@router.get("/board")
async def board(
    request: Request,
    web: Pages,
    session: Coordinator,
    status: str | None = None,
    assignment: str | None = None,
    overdue: str | None = None,
) -> HTMLResponse:
    """The queue, the assignments soonest due first, the cases by status, the dead letters."""
    status = one_of(status, CASE_STATUSES)
    assignment = one_of(assignment, (*ASSIGNMENT_STATUSES, rules.ALL_ASSIGNMENTS))
    late = overdue == "yes"
    who = token(session)
    queue, assignments, cases = await asyncio.gather(
        web.platform.queue(token=who),
        web.platform.assignments(
            token=who,
            status=rules.assignments_listed(assignment),
            overdue=late or None,
            brief=True,
            limit=BOARD_ROWS,
        ),
        web.platform.cases_by_status(token=who, status=status, limit=BOARD_ROWS),
    )
    return web.render(
        request,
        "board/board.html",
        queue=queue.items,
        assignments=assignments.items,
        cases=cases.items,
        chosen_status=status,
        assignment=assignment,
        overdue=late,
        case_statuses=CASE_STATUSES,
        assignment_statuses=ASSIGNMENT_STATUSES,
        dead_letters=request.app.state.dead_letters.depths(),
    )


async def _queued(
    platform: Platform, who: str, specialty: str, urgency: str, case_id: str
) -> QueuedCase | None:
    """The case's place in the queue, if it waits there."""
    cursor = None
    for _ in range(QUEUE_PAGES):
        page = await platform.queue(token=who, specialty=specialty, urgency=urgency, cursor=cursor)
        found = next((q for q in page.items if q.case_id == case_id), None)
        if found is not None or page.next_cursor is None:
            return found
        cursor = page.next_cursor
    return None


@router.get("/board/cases/{case_id}")
async def board_case(
    request: Request, web: Pages, session: Coordinator, case_id: CaseId
) -> HTMLResponse:
    """A case for its coordinator: where it stands, its assignments and the matcher's reasons,
    a hand assignment while it waits, who looked at it, and its clinical content on request."""
    who = token(session)
    case, assignments, trail = await asyncio.gather(
        web.platform.get_case(token=who, case_id=case_id),
        web.platform.assignments(token=who, case_id=case_id),
        web.platform.access_log(token=who, case_id=case_id),
    )
    queued = None
    live = {"assigned", "accepted", "completed"}
    if case.status in WAITABLE and not any(a.status in live for a in assignments.items):
        queued = await _queued(web.platform, who, case.specialty, case.urgency, case_id)
    reviewers = []
    if queued is not None:
        directory = await web.platform.reviewers(token=who, specialty=case.specialty)
        reviewers = directory.items
    return web.render(
        request,
        "board/case.html",
        case=case,
        assignments=sorted(assignments.items, key=_by_round, reverse=True),
        trail=trail.items,
        actions=rules.TRAIL_ACTIONS,
        purposes=rules.TRAIL_PURPOSES,
        queued=queued,
        reviewers=reviewers,
    )


def _by_round(assignment: AssignmentView) -> int:
    return assignment.round


@router.post("/board/cases/{case_id}/assign", dependencies=[Checked])
async def assign(
    web: Pages, session: Coordinator, case_id: CaseId, reviewer_id: ReviewerId
) -> Response:
    """Give a waiting case to the reviewer chosen (review checks every rule but capacity)."""
    await tell(
        session, "board.assigned", web.platform.assign, case_id=case_id, reviewer_id=reviewer_id
    )
    return see(f"/board/cases/{case_id}")


@router.post("/board/cases/{case_id}/clinical", dependencies=[Checked])
async def clinical(
    request: Request,
    web: Pages,
    session: Coordinator,
    case_id: CaseId,
    reason: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """The clinical content, shown once on this answer (never kept), read for the reason given;
    intake records the reason in the case's access trail."""
    reason = rules.said(reason)
    if not reason:
        session.notify("error", "board.reason_required")
        return see(f"/board/cases/{case_id}")
    content = await web.platform.clinical(token=token(session), case_id=case_id, reason=reason)
    return web.render(
        request, "board/clinical.html", case_id=case_id, content=content, reason=reason
    )


@router.post("/board/cases/{case_id}/hold", dependencies=[Checked])
async def hold(web: Pages, session: Coordinator, case_id: CaseId, reason: Said = "") -> Response:
    """Put the case under a legal hold, saying why: its erasure waits while the hold stands."""
    return await _keep_or_erase(web, session, case_id, "held", reason)


@router.post("/board/cases/{case_id}/release", dependencies=[Checked])
async def release(
    web: Pages, session: Coordinator, case_id: CaseId, reason: Said = "", confirm: Said = ""
) -> Response:
    """Lift the legal hold, saying why. An erasure the patient asked for meanwhile is carried
    out at once, so the coordinator confirms that first."""
    ticked = confirm == "yes"
    return await _keep_or_erase(
        web,
        session,
        case_id,
        "released",
        reason,
        lambda case: rules.release_confirmed(case, ticked),
    )


@router.post("/board/cases/{case_id}/erase", dependencies=[Checked])
async def erase(
    web: Pages, session: Coordinator, case_id: CaseId, reason: Said = "", reference: Said = ""
) -> Response:
    """Erase the case's data for good, saying why, once the coordinator has typed its
    reference; intake refuses while a legal hold stands."""
    return await _keep_or_erase(
        web,
        session,
        case_id,
        "erased",
        reason,
        lambda case: rules.erasure_confirmed(reference, case.reference),
    )


async def _keep_or_erase(
    web: Web,
    session: Session,
    case_id: str,
    done: str,
    reason: str,
    confirmed: Callable[[CaseView], bool] | None = None,
) -> Response:
    """A legal hold set (`held`) or lifted (`released`), or an erasure (`erased`), with the
    reason given and, where asked, confirmed on the case as it stands; what came of it, in
    plain words, on the case's page."""
    page = see(f"/board/cases/{case_id}")
    reason = rules.said(reason)
    if not reason:
        session.notify("error", "board.keep.reason_required")
        return page
    if confirmed is not None:
        case = await web.platform.get_case(token=token(session), case_id=case_id)
        if not confirmed(case):
            session.notify("error", f"board.keep.{done}_unconfirmed")
            return page
    platform = web.platform
    call = {"held": platform.hold, "released": platform.release, "erased": platform.erase}[done]
    await tell(
        session, f"board.keep.{done}", call, rules.reasoned_refusal, case_id=case_id, reason=reason
    )
    return page


@router.get("/board/reviewers")
async def reviewers(
    request: Request,
    web: Pages,
    session: Coordinator,
    specialty: str | None = None,
    language: str | None = None,
) -> HTMLResponse:
    """The reviewer directory: specialties, languages, capacity and load, conflicts."""
    specialty = one_of(specialty, tuple(Specialty))
    language = one_of(language, tuple(Language))
    who = token(session)
    page, translators = await asyncio.gather(
        web.platform.reviewers(token=who, specialty=specialty, language=language),
        TranslationCalls(web.platform).translators(token=who, language=language),
    )
    return web.render(
        request,
        "board/reviewers.html",
        reviewers=page.items,
        translators=translators.items,
        specialty=specialty,
        language=language,
        specialties=list(Specialty),
    )


@router.get("/board/translations")
async def translations(request: Request, web: Pages, session: Coordinator) -> HTMLResponse:
    """The translations of international reviews not done yet, soonest due first, the overdue
    ones marked: review's index of the open ones, each read by id (their first pages)."""
    calls = TranslationCalls(web.platform)
    rows: list[TranslationView] = []
    cursor = None
    for _ in range(QUEUE_PAGES):
        page = await calls.mine(token=token(session), cursor=cursor)
        rows += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return web.render(
        request,
        "board/translations.html",
        rows=sorted(rows, key=lambda t: (t.due_at, t.id)),
        more=cursor is not None,
    )


@router.get("/board/partners")
async def partners(
    request: Request,
    web: Pages,
    session: Coordinator,
    partner_id: PartnerId = None,
    subscription_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> HTMLResponse:
    """A partner's subscriptions, and one subscription's deliveries with replay."""
    who = token(session)
    subscriptions = []
    if partner_id:
        subscriptions = (await web.platform.subscriptions(token=who, partner_id=partner_id)).items
    deliveries = None
    if subscription_id:
        deliveries = (
            await web.platform.deliveries(token=who, subscription_id=subscription_id)
        ).items
    return web.render(
        request,
        "board/partners.html",
        partner_id=partner_id,
        subscriptions=subscriptions,
        subscription_id=subscription_id,
        deliveries=deliveries,
    )


@router.post("/board/deliveries/{delivery_id}/replay", dependencies=[Checked])
async def replay(
    web: Pages,
    session: Coordinator,
    delivery_id: Id,
    partner_id: Annotated[str, Form(pattern=ID_PATTERN)],
    subscription_id: Annotated[str, Form(pattern=ID_PATTERN)],
) -> Response:
    """Queue a dead delivery again (the same webhook-id), then back to the list."""
    await replay_delivery(web.platform, session, delivery_id)
    query = urlencode({"partner_id": partner_id, "subscription_id": subscription_id})
    return see(f"/board/partners?{query}")


async def replay_delivery(platform: Platform, session: Session, delivery_id: str) -> None:
    """Replay a delivery and say what came of it on the next page."""
    try:
        await platform.replay(token=token(session), delivery_id=delivery_id)
        session.notify("ok", "deliveries.replayed")
    except Refused as exc:
        if exc.status == 401:
            raise
        message = "deliveries.not_replayable" if exc.status == 409 else None
        session.notify("error", message or rules.problem_message(exc.status, exc.problem_type))
