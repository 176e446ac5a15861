"""HTTP routes of the notify service (thin: parse, authorise, call service, shape)."""

from typing import Annotated, cast

from fastapi import APIRouter, Depends, Path, Query, Request

from avis.notify.models import CURSOR_PATTERN, ID_PATTERN, Notification, NotificationPage
from avis.notify.service import NotifyService
from avis.shared.problems import problem_responses
from avis.shared.security import Principal, require_roles

router = APIRouter(prefix="/v1", tags=["notifications"])


def _notify(request: Request) -> NotifyService:
    return cast(NotifyService, request.app.state.notify)


Notify = Annotated[NotifyService, Depends(_notify)]
Reader = Annotated[Principal, Depends(require_roles("coordinator", "patient"))]
READ = problem_responses(401, 403, 404, 422, 503)


@router.get(
    "/notifications",
    summary="A case's notifications (coordinators, or the patient of the case)",
    responses=READ,
)
async def list_notifications(
    notify: Notify,
    who: Reader,
    case_id: Annotated[str, Query(pattern=ID_PATTERN, description="The case's id.")],
    cursor: Annotated[
        str | None,
        Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page, as is."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = 20,
) -> NotificationPage:
    """Oldest first: which email, its language, status and every attempt (never the address)."""
    return await notify.notifications(principal=who, case_id=case_id, cursor=cursor, limit=limit)


@router.get(
    "/notifications/{notification_id}",
    summary="One notification (coordinators, or the patient of the case)",
    responses=READ,
)
async def get_notification(
    notify: Notify,
    who: Reader,
    notification_id: Annotated[str, Path(pattern=ID_PATTERN, description="Its id.")],
) -> Notification:
    """One notification and its attempts."""
    return await notify.notification(principal=who, notification_id=notification_id)
