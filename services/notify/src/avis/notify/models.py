"""API schemas of the notify service: what a coordinator or the patient sees of a case's
notifications (never the address, never the email's text)."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from avis.notify.rules import DeliveryStatus, Outcome, SendStatus, Template, WebhookEvent
from avis.notify.store import DeliveryDoc, SendDoc, SubscriptionDoc
from avis.shared.events import Language

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
CURSOR_PATTERN = r"^[0-9]{1,6}$"


class AttemptView(BaseModel):
    """One attempt to send and what came of it."""

    at: datetime
    outcome: Outcome
    code: int | None = Field(description="The SMTP reply code, when the server gave one.")
    reason: str = Field(description="Reply and enhanced status codes; never the server's text.")


class Notification(BaseModel):
    """One notification of a case: which email, in which language, and where its sending is."""

    id: str
    case_id: str
    event_id: str = Field(description="The event that caused it.")
    channel: str
    template: Template
    language: Language
    status: SendStatus
    message_id: str = Field(description="Stable across repeats, so a duplicate is detectable.")
    created_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    attempts: list[AttemptView]

    @classmethod
    def of(cls, send: SendDoc) -> "Notification":
        """The view of a stored send."""
        return cls(
            id=send.id,
            case_id=send.case_id,
            event_id=send.event_id,
            channel=send.channel,
            template=send.template,
            language=send.language,
            status=send.status,
            message_id=send.message_id,
            created_at=send.created_at,
            next_attempt_at=send.next_at if send.status is SendStatus.QUEUED else None,
            sent_at=send.sent_at,
            attempts=[AttemptView(**a.model_dump()) for a in send.attempts],
        )


class NotificationPage(BaseModel):
    """A page of a case's notifications, oldest first; pass `next_cursor` as `cursor`."""

    items: list[Notification]
    next_cursor: str | None


# --- partner webhooks ---------------------------------------------------------------------

URL_PATTERN = r"^https?://[^\s/?#@]+(/[^\s#]*)?$"
URL_FIELD = Field(
    min_length=8,
    max_length=2048,
    pattern=URL_PATTERN,
    description="https:// endpoint; it must resolve to public addresses only.",
    examples=["https://partner.example/avis/webhooks"],
)
EVENT_TYPES_FIELD = Field(
    min_length=1, max_length=len(WebhookEvent), description="The event types to receive."
)


class SubscriptionIn(BaseModel):
    """A new webhook subscription."""

    model_config = ConfigDict(extra="forbid")

    url: str = URL_FIELD
    event_types: list[WebhookEvent] = EVENT_TYPES_FIELD
    description: str = Field("", max_length=200, pattern=r"^[^\x00-\x1f]*$")


class SubscriptionPatch(BaseModel):
    """Changes to a subscription; `enabled: true` re-enables one that was disabled."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, min_length=8, max_length=2048, pattern=URL_PATTERN)
    event_types: list[WebhookEvent] | None = Field(None, min_length=1, max_length=len(WebhookEvent))
    description: str | None = Field(None, max_length=200, pattern=r"^[^\x00-\x1f]*$")
    enabled: bool | None = None


class Subscription(BaseModel):
    """A partner's webhook endpoint (never its secret)."""

    id: str
    partner_id: str
    url: str
    event_types: list[WebhookEvent]
    description: str
    enabled: bool
    disabled_reason: str | None = Field(description="Why it was disabled, while it is.")
    disabled_at: datetime | None
    consecutive_failures: int
    previous_secrets_expire_at: datetime | None = Field(
        description="While a rotated-out secret still signs, until when."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, sub: SubscriptionDoc, now: datetime) -> "Subscription":
        """The view of a stored subscription."""
        grace = [s.expires_at for s in sub.secrets if s.expires_at and s.expires_at > now]
        return cls(
            id=sub.id,
            partner_id=sub.partner_id,
            url=sub.url,
            event_types=sub.event_types,
            description=sub.description,
            enabled=sub.enabled,
            disabled_reason=sub.disabled_reason,
            disabled_at=sub.disabled_at,
            consecutive_failures=sub.consecutive_failures,
            previous_secrets_expire_at=max(grace) if grace else None,
            created_at=sub.created_at,
            updated_at=sub.updated_at,
        )


class SubscriptionCreated(Subscription):
    """A new subscription and its signing secret, shown this once."""

    secret: str = Field(description="Standard Webhooks secret, `whsec_<base64>`; keep it safe.")


class SecretRotated(BaseModel):
    """The new signing secret, shown this once; the previous one signs too until the time."""

    secret: str
    previous_secrets_expire_at: datetime


class SubscriptionPage(BaseModel):
    """A page of a partner's subscriptions, oldest first; pass `next_cursor` as `cursor`."""

    items: list[Subscription]
    next_cursor: str | None


class DeliveryAttemptView(BaseModel):
    """One attempt to deliver."""

    at: datetime
    outcome: Outcome
    code: int | None = Field(description="The endpoint's HTTP status, when it answered.")
    latency_ms: int
    reason: str = Field(description="What went wrong; never the endpoint's body.")


class Delivery(BaseModel):
    """One event delivered to one subscription, and every attempt."""

    id: str
    subscription_id: str
    case_id: str
    event_id: str
    event_type: WebhookEvent
    webhook_id: str = Field(description="The `webhook-id` header, the same on every retry.")
    status: DeliveryStatus
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    replays: int
    attempts: list[DeliveryAttemptView]

    @classmethod
    def of(cls, d: DeliveryDoc) -> "Delivery":
        """The view of a stored delivery."""
        return cls(
            id=d.id,
            subscription_id=d.subscription_id,
            case_id=d.case_id,
            event_id=d.event_id,
            event_type=d.event_type,
            webhook_id=d.webhook_id,
            status=d.status,
            created_at=d.created_at,
            next_attempt_at=d.next_at if d.status is DeliveryStatus.QUEUED else None,
            delivered_at=d.delivered_at,
            replays=d.replays,
            attempts=[DeliveryAttemptView(**a.model_dump()) for a in d.attempts],
        )


class DeliveryPage(BaseModel):
    """A page of a subscription's latest deliveries, newest first."""

    items: list[Delivery]
    next_cursor: str | None
