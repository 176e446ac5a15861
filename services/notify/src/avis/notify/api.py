"""HTTP routes of the notify service (thin: parse, authorise, call service, shape)."""

from typing import Annotated, cast

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from avis.notify.fhir_endpoints import FhirEndpoints
from avis.notify.models import (
    CURSOR_PATTERN,
    Delivery,
    DeliveryPage,
    FhirEndpoint,
    FhirEndpointList,
    Notification,
    NotificationPage,
    Resealed,
    SecretRotated,
    Subscription,
    SubscriptionCreated,
    SubscriptionIn,
    SubscriptionPage,
    SubscriptionPatch,
)
from avis.notify.service import NotifyService, SecretResealing
from avis.shared.pages import Limit, cursor_param
from avis.shared.problems import problem_responses
from avis.shared.security import Principal, require_roles
from avis.shared.text import CODE_PATTERN, ID_PATTERN

router = APIRouter(prefix="/v1", tags=["notifications"])


async def _notify(request: Request) -> NotifyService:
    return cast(NotifyService, request.app.state.notify)


Notify = Annotated[NotifyService, Depends(_notify)]
Reader = Annotated[Principal, Depends(require_roles("coordinator", "patient"))]
Cursor = Annotated[str | None, cursor_param(pattern=CURSOR_PATTERN)]
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
    cursor: Cursor = None,
    limit: Limit = 20,
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


# --- partner webhooks ---------------------------------------------------------------------

hooks = APIRouter(prefix="/v1", tags=["webhooks"])
Partner = Annotated[Principal, Depends(require_roles("partner"))]
Watcher = Annotated[Principal, Depends(require_roles("partner", "coordinator"))]
SubscriptionId = Annotated[str, Path(pattern=ID_PATTERN, description="The subscription's id.")]
DeliveryId = Annotated[str, Path(pattern=ID_PATTERN, description="The delivery's id.")]
WRITE = problem_responses(400, 401, 403, 404, 422, 503)


@hooks.post(
    "/subscriptions",
    status_code=201,
    summary="Subscribe an endpoint to a partner's events (partners)",
    responses=problem_responses(400, 401, 403, 422, 503),
)
async def subscribe(notify: Notify, who: Partner, body: SubscriptionIn) -> SubscriptionCreated:
    """The answer holds the signing secret, shown this once."""
    return await notify.subscribe(principal=who, request=body)


@hooks.get(
    "/subscriptions",
    summary="A partner's subscriptions (the partner; coordinators with `partner_id`)",
    responses=READ,
)
async def list_subscriptions(
    notify: Notify,
    who: Watcher,
    cursor: Cursor = None,
    limit: Limit = 20,
    partner_id: Annotated[
        str | None,
        Query(pattern=ID_PATTERN, description="Coordinators: whose; ignored for a partner."),
    ] = None,
) -> SubscriptionPage:
    """Oldest first, never a secret."""
    return await notify.subscriptions(
        principal=who, partner_id=partner_id, cursor=cursor, limit=limit
    )


@hooks.get("/subscriptions/{subscription_id}", summary="One subscription", responses=READ)
async def get_subscription(
    notify: Notify, who: Watcher, subscription_id: SubscriptionId
) -> Subscription:
    """Its state, and why it was disabled if it is."""
    return await notify.subscription(principal=who, subscription_id=subscription_id)


@hooks.patch(
    "/subscriptions/{subscription_id}",
    summary="Change a subscription, or re-enable it (partners)",
    responses=WRITE,
)
async def update_subscription(
    notify: Notify, who: Partner, subscription_id: SubscriptionId, body: SubscriptionPatch
) -> Subscription:
    """`enabled: true` re-enables a disabled subscription and clears its failure count."""
    return await notify.update_subscription(
        principal=who, subscription_id=subscription_id, change=body
    )


@hooks.delete(
    "/subscriptions/{subscription_id}",
    status_code=204,
    summary="Delete a subscription (partners)",
    responses=WRITE,
)
async def delete_subscription(
    notify: Notify, who: Partner, subscription_id: SubscriptionId
) -> Response:
    """Its queued deliveries are not sent."""
    await notify.unsubscribe(principal=who, subscription_id=subscription_id)
    return Response(status_code=204)


@hooks.post(
    "/subscriptions/{subscription_id}/rotate-secret",
    summary="Rotate the signing secret (partners)",
    responses=WRITE,
)
async def rotate_secret(
    notify: Notify, who: Partner, subscription_id: SubscriptionId
) -> SecretRotated:
    """A new secret, shown once; deliveries carry both signatures during the grace period."""
    return await notify.rotate_secret(principal=who, subscription_id=subscription_id)


@hooks.post(
    "/webhook-secrets/reseal",
    summary="Seal every webhook secret under the keyring's current key (service machines)",
    responses=problem_responses(401, 403, 409, 503),
)
async def reseal_secrets(
    notify: Notify, who: Annotated[Principal, Depends(require_roles("service"))]
) -> Resealed:
    """After AVIS_SEALING_KEYS gained a new first key: the secrets an earlier key sealed are
    sealed again under it, so that the earlier key can be retired (docs/operations.md)."""
    return await SecretResealing(notify).reseal()


@hooks.get(
    "/deliveries",
    summary="A subscription's latest deliveries and every attempt",
    responses=READ,
)
async def list_deliveries(
    notify: Notify,
    who: Watcher,
    subscription_id: Annotated[str, Query(pattern=ID_PATTERN, description="Whose deliveries.")],
    cursor: Cursor = None,
    limit: Limit = 20,
) -> DeliveryPage:
    """Newest first: status, each attempt's response code and latency, the next try."""
    return await notify.deliveries(
        principal=who, subscription_id=subscription_id, cursor=cursor, limit=limit
    )


@hooks.get("/deliveries/{delivery_id}", summary="One delivery", responses=READ)
async def get_delivery(notify: Notify, who: Watcher, delivery_id: DeliveryId) -> Delivery:
    """Its attempts."""
    return await notify.delivery(principal=who, delivery_id=delivery_id)


@hooks.post(
    "/deliveries/{delivery_id}/replay",
    status_code=202,
    summary="Replay a dead delivery (the partner, or coordinators)",
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def replay_delivery(notify: Notify, who: Watcher, delivery_id: DeliveryId) -> Delivery:
    """Queued again with the same `webhook-id` and a fresh retry window."""
    return await notify.replay(principal=who, delivery_id=delivery_id)


# --- physicians' institutions' FHIR endpoints ---------------------------------------------

endpoints = APIRouter(prefix="/v1", tags=["fhir-endpoints"])
Coordinator = Annotated[Principal, Depends(require_roles("coordinator"))]
Institution = Annotated[str, Path(pattern=CODE_PATTERN, description="The institution's code.")]


async def _endpoints(request: Request) -> FhirEndpoints:
    return cast(FhirEndpoints, request.app.state.fhir_endpoints)


Endpoints = Annotated[FhirEndpoints, Depends(_endpoints)]


@endpoints.get(
    "/fhir-endpoints",
    summary="The institutions' FHIR endpoints and their state (coordinators)",
    responses=problem_responses(401, 403, 503),
)
async def list_fhir_endpoints(fhir: Endpoints, who: Coordinator) -> FhirEndpointList:
    """By institution code: enabled or not, failed posts in a row, why it was disabled, how
    many posts wait for it (never its URL)."""
    return await fhir.list()


@endpoints.post(
    "/fhir-endpoints/{institution}/enable",
    summary="Re-enable a disabled FHIR endpoint (coordinators)",
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def enable_fhir_endpoint(
    fhir: Endpoints, who: Coordinator, institution: Institution
) -> FhirEndpoint:
    """Clears its failure count; the posts that waited for it are posted at once."""
    return await fhir.enable(institution)
