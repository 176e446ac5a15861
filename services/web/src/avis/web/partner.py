"""The partner console (thin, like api.py): the partner's webhook subscriptions (create, list,
delete), the signing secret shown once at creation, and each subscription's deliveries with
replay. Notify decides everything, from the partner's own token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import HTMLResponse, Response

from avis.shared.text import ID_PATTERN
from avis.web.api import Checked, Pages, Person, see, tell, token
from avis.web.board import replay_delivery
from avis.web.service import Refused
from avis.web.store import Session

router = APIRouter(include_in_schema=False)
# The event types a partner may subscribe to (notify's `WebhookEvent`).
EVENT_TYPES = (
    "avis.case.submitted.v1",
    "avis.case.withdrawn.v1",
    "avis.review.assigned.v1",
    "avis.review.information-requested.v1",
    "avis.review.resumed.v1",
    "avis.review.second-reading-requested.v1",
    "avis.review.translation-queued.v1",
    "avis.review.translation-done.v1",
    "avis.report.ready.v1",
)
Id = Annotated[str, Path(pattern=ID_PATTERN)]


def partner(session: Person) -> Session:
    """The session of a signed-in partner; anyone else is refused in plain words."""
    if session.identity is None or session.identity.role != "partner":
        raise Refused(403, "forbidden")
    return session


Partner = Annotated[Session, Depends(partner)]


@router.get("/partner")
async def console(request: Request, web: Pages, session: Partner) -> HTMLResponse:
    """The partner's subscriptions and the form to add one."""
    page = await web.platform.subscriptions(token=token(session))
    return web.render(
        request,
        "partner/console.html",
        subscriptions=page.items,
        event_types=EVENT_TYPES,
        created=None,
        errors={},
        form={},
    )


@router.post("/partner/subscriptions", dependencies=[Checked])
async def subscribe(request: Request, web: Pages, session: Partner) -> Response:
    """Subscribe an endpoint; the answer shows its signing secret this once (never kept)."""
    form = await request.form()
    url = str(form.get("url") or "").strip()
    description = " ".join(str(form.get("description") or "").split())
    chosen = [str(e) for e in form.getlist("event_types") if str(e) in EVENT_TYPES]
    errors = {}
    if not url:
        errors["url"] = "partner.url_required"
    if not chosen:
        errors["event_types"] = "partner.events_required"
    created = None
    if not errors:
        try:
            created = await web.platform.subscribe(
                token=token(session), url=url, event_types=chosen, description=description
            )
        except Refused as exc:
            if exc.status not in (400, 422):
                raise
            errors["url"] = "partner.url_refused"
    page = await web.platform.subscriptions(token=token(session))
    return web.render(
        request,
        "partner/console.html",
        status=422 if errors else 201,
        subscriptions=page.items,
        event_types=EVENT_TYPES,
        created=created,
        errors=errors,
        form={"url": url, "description": description, "event_types": chosen},
    )


@router.post("/partner/subscriptions/{subscription_id}/delete", dependencies=[Checked])
async def unsubscribe(
    web: Pages,
    session: Partner,
    subscription_id: Id,
    confirm: Annotated[str, Form()] = "",
) -> Response:
    """Delete a subscription, once confirmed (its queued deliveries are not sent)."""
    if confirm != "yes":
        session.notify("error", "partner.delete_unconfirmed")
        return see("/partner")
    await tell(
        session, "partner.deleted", web.platform.unsubscribe, subscription_id=subscription_id
    )
    return see("/partner")


@router.get("/partner/subscriptions/{subscription_id}")
async def deliveries(
    request: Request, web: Pages, session: Partner, subscription_id: Id
) -> HTMLResponse:
    """One subscription and its latest deliveries, each attempt, and replay for a dead one."""
    who = token(session)
    subscription = await web.platform.subscription(token=who, subscription_id=subscription_id)
    page = await web.platform.deliveries(token=who, subscription_id=subscription_id)
    return web.render(
        request, "partner/deliveries.html", subscription=subscription, deliveries=page.items
    )


@router.post("/partner/deliveries/{delivery_id}/replay", dependencies=[Checked])
async def replay(
    web: Pages,
    session: Partner,
    delivery_id: Id,
    subscription_id: Annotated[str, Form(pattern=ID_PATTERN)],
) -> Response:
    """Queue a dead delivery again (the same webhook-id), then back to its subscription."""
    await replay_delivery(web.platform, session, delivery_id)
    return see(f"/partner/subscriptions/{subscription_id}")
