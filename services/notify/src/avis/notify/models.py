"""API schemas of the notify service and the names they use: what a coordinator or the patient
sees of a case's notifications (never the address, never the email's text), and what a partner
sees of its webhook subscriptions and deliveries."""

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from avis.shared.events import Language

# Notify's lists page by position: a cursor is the index of the next item.
CURSOR_PATTERN = r"^[0-9]{1,6}$"


class Template(StrEnum):
    """The emails notify sends to the patient."""

    CASE_RECEIVED = "case_received"
    REVIEW_ASSIGNED = "review_assigned"
    REVIEW_ABROAD = "review_abroad"  # assigned abroad: a translator carries it both ways
    EXPECTED_DATE_CHANGED = "expected_date_changed"
    INFORMATION_REQUESTED = "information_requested"  # the specialist asks; the clock stands
    REVIEW_RESUMED = "review_resumed"  # answered (or expired): the review goes on, a new date
    REPORT_READY = "report_ready"
    REPORT_UPDATED = "report_updated"
    FOLLOW_UP_RECEIVED = "follow_up_received"  # a follow-up question went to the specialist
    FOLLOW_UP_ANSWERED = "follow_up_answered"  # answered: an addendum in the next version
    CASE_WITHDRAWN = "case_withdrawn"
    ERASURE_DONE = "erasure_done"  # the one email sent once the case is erased
    # To the treating physician, with the patient's consent: the link to the full report.
    PHYSICIAN_REPORT = "physician_report"
    # To a professional, when work waits for them: what waits and a link to the page in web
    # where they do it, never the case's content.
    PRO_FOLLOW_UP = "pro_follow_up"  # a follow-up question waits for the specialist
    PRO_SECOND_READING = "pro_second_reading"  # a reading waits for the second reader
    PRO_COMMENTS = "pro_comments"  # the second reader's comments wait for the specialist
    PRO_TRANSLATION = "pro_translation"  # a translation waits for the translator


class SendStatus(StrEnum):
    """Where a queued send is."""

    QUEUED = "queued"  # waiting for its first attempt or its next retry
    SENT = "sent"  # the server accepted it (250)
    FAILED = "failed"  # refused for good (5xx), or retries exhausted
    CANCELLED = "cancelled"  # never sent: its case was erased first


class Outcome(StrEnum):
    """What one attempt came to."""

    SENT = "sent"
    TRANSIENT = "transient"  # 4xx, connection refused or dropped, timeout: retried
    PERMANENT = "permanent"  # 5xx: not retried


class WebhookEvent(StrEnum):
    """The event types a partner may subscribe to."""

    CASE_SUBMITTED = "avis.case.submitted.v1"
    CASE_WITHDRAWN = "avis.case.withdrawn.v1"
    REVIEW_ASSIGNED = "avis.review.assigned.v1"
    INFORMATION_REQUESTED = "avis.review.information-requested.v1"
    REVIEW_RESUMED = "avis.review.resumed.v1"
    SECOND_READING_REQUESTED = "avis.review.second-reading-requested.v1"
    FOLLOW_UP_ASKED = "avis.review.follow-up-asked.v1"
    FOLLOW_UP_ANSWERED = "avis.review.follow-up-answered.v1"
    TRANSLATION_QUEUED = "avis.review.translation-queued.v1"
    TRANSLATION_DONE = "avis.review.translation-done.v1"
    REPORT_READY = "avis.report.ready.v1"
    # The treating physician got their copy of the report (no one named: a version, a channel).
    PHYSICIAN_COPY_SENT = "avis.report.physician-copy-sent.v1"


class DeliveryStatus(StrEnum):
    """Where a webhook delivery is."""

    QUEUED = "queued"  # waiting for its first attempt or its next retry
    DELIVERED = "delivered"  # the endpoint answered 2xx
    DEAD = "dead"  # retries spent, or the subscription was disabled or deleted: replayable


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


class SubscriptionCreated(Subscription):
    """A new subscription and its signing secret, shown this once."""

    secret: str = Field(description="Standard Webhooks secret, `whsec_<base64>`; keep it safe.")


class SecretRotated(BaseModel):
    """The new signing secret, shown this once; the previous one signs too until the time."""

    secret: str
    previous_secrets_expire_at: datetime


class Resealed(BaseModel):
    """How many webhook secrets were sealed again, and under which key of the keyring."""

    resealed: int
    key_id: str


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


class DeliveryPage(BaseModel):
    """A page of a subscription's latest deliveries, newest first."""

    items: list[Delivery]
    next_cursor: str | None


class FhirEndpoint(BaseModel):
    """The state of an institution's FHIR endpoint, where its physicians' copies are posted
    (never its URL, never a person)."""

    institution: str = Field(description="The institution's code.")
    enabled: bool
    consecutive_failures: int = Field(description="Failed posts in a row.")
    disabled_reason: str | None = Field(description="Why it was disabled, while it is.")
    disabled_at: datetime | None
    waiting: int = Field(description="Posts waiting for it to be re-enabled.")


class FhirEndpointList(BaseModel):
    """Every institution with a FHIR endpoint set, by code."""

    items: list[FhirEndpoint]
