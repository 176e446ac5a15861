"""The notify service's collections, typed document models and every Mongo operator it uses.

Every access is by `_id` equality (DESIGN.md section 4; FerretDB serves nothing else from an
index), so each costs the same however much is stored:

- `cases`, `_id` = case id: what notify knows of a case (its reference, the patient's
  language, the contact sealed under notify's own associated data, what the patient was told),
  the events parked until its submission arrives, and the ids of its sends in order.
- `sends`, `_id` = `<channel>:<event id>`: one queued send per notification, its attempts
  and its status. A redelivered event queues nothing new. A webhook delivery is another channel
  of the same queue.
- `due`, `_id` = `b:<bucket>`: the due-queue, one small document per time bucket listing the
  ids of the sends due in it, plus `_id` = `cursor`, the oldest bucket that may still hold
  work. The sender walks buckets from the cursor to now by `_id`, so finding due work costs
  what is due, not what was ever sent. Bucket documents are written under one in-process
  lock (the store does not serialise writers), by the one sender of a deployment. Webhook
  deliveries have a due-queue of their own (`_id` = `w:<bucket>`, `cursor:webhook`), worked
  by their own worker, so a partner's endpoint never stands in the emails' way.
- `subscriptions`, `_id` = subscription id: a partner's endpoint, the event types it wants,
  its signing secrets (sealed at rest), its state and the ids of its latest deliveries.
- `partners`, `_id` = partner id: the ids of the partner's subscriptions.
- `deliveries`, `_id` = `wh:<event id>:<subscription id>`: one webhook delivery and its
  attempts.
"""

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from avis.notify.rules import (
    CaseView,
    DeliveryStatus,
    Outcome,
    SendStatus,
    Template,
    WebhookEvent,
)
from avis.shared.events import Language
from avis.shared.mongo import Document
from avis.shared.sealing import Sealed

CURSOR_ID = "cursor"


class Stored(BaseModel):
    """Base of notify's documents: `_id` as `id`, unknown fields kept out."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(alias="_id")

    def to_doc(self) -> Document:
        """The document as stored."""
        return self.model_dump(by_alias=True)


class ParkedEvent(BaseModel):
    """An event that arrived before its case's submission, as `Event.to_doc` wrote it."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: str


class CaseDoc(Stored):
    """What notify knows of one case."""

    reference: str | None = None
    language: Language | None = None
    specialty: str | None = None
    patient_id: str | None = None
    contact: Sealed | None = None  # sealed under `contact_aad(case id)`
    traceparent: str = ""
    submitted: bool = False
    withdrawn: bool = False
    told_due: date | None = None
    report_version: int = 0
    parked: list[dict[str, Any]] = Field(default_factory=list)
    notifications: list[str] = Field(default_factory=list)
    updated_at: datetime | None = None
    # Partner scope, from the submission: set only with the `share_with_partner` consent.
    partner_id: str | None = None
    partner_reference: str | None = None
    case_url: str = ""
    deliveries: list[str] = Field(default_factory=list)

    @property
    def view(self) -> CaseView:
        """The decision-relevant part."""
        return CaseView(self.submitted, self.withdrawn, self.told_due, self.report_version)

    def to_doc(self) -> Document:
        """Stored form; dates as ISO text (BSON has no date-only type)."""
        doc = super().to_doc()
        doc["told_due"] = self.told_due.isoformat() if self.told_due else None
        doc["contact"] = self.contact.model_dump() if self.contact else None
        doc["language"] = self.language.value if self.language else None
        return doc


def contact_aad(case_id: str) -> str:
    """The associated data notify seals a case's contact under (bound to the case)."""
    return f"avis-notify:contact:{case_id}"


class Attempt(BaseModel):
    """One attempt to send."""

    at: datetime
    outcome: Outcome
    code: int | None = None
    reason: str = ""


class SendDoc(Stored):
    """One queued send: an email to the patient (later also a webhook delivery)."""

    channel: str = "email"
    case_id: str
    event_id: str
    template: Template
    language: Language
    params: dict[str, str]
    message_id: str
    traceparent: str = ""
    status: SendStatus = SendStatus.QUEUED
    created_at: datetime
    next_at: datetime | None = None
    sent_at: datetime | None = None
    attempts: list[Attempt] = Field(default_factory=list)

    def to_doc(self) -> Document:
        """Stored form; enums as their values."""
        return self.model_dump(by_alias=True, mode="python") | {
            "template": self.template.value,
            "language": self.language.value,
            "status": self.status.value,
            "attempts": [a.model_dump() | {"outcome": a.outcome.value} for a in self.attempts],
        }


class SecretDoc(BaseModel):
    """One signing secret (`whsec_...`), sealed; `expires_at` set once it was rotated out."""

    id: str
    sealed: Sealed
    created_at: datetime
    expires_at: datetime | None = None


class SubscriptionDoc(Stored):
    """A partner's webhook endpoint."""

    partner_id: str
    url: str
    event_types: list[WebhookEvent]
    description: str = ""
    secrets: list[SecretDoc]
    enabled: bool = True
    disabled_reason: str | None = None
    disabled_at: datetime | None = None
    consecutive_failures: int = 0
    recent: list[str] = Field(default_factory=list)  # latest delivery ids, newest last
    created_at: datetime
    updated_at: datetime

    def to_doc(self) -> Document:
        """Stored form; enums as values, sealed secrets as documents."""
        return self.model_dump(by_alias=True, mode="python") | {
            "event_types": [e.value for e in self.event_types],
            "secrets": [s.model_dump() | {"sealed": s.sealed.model_dump()} for s in self.secrets],
        }


def secret_aad(subscription_id: str, secret_id: str) -> str:
    """The associated data a subscription's secret is sealed under."""
    return f"avis-notify:webhook-secret:{subscription_id}:{secret_id}"


class DeliveryAttempt(BaseModel):
    """One attempt to deliver a webhook."""

    at: datetime
    outcome: Outcome
    code: int | None = None
    latency_ms: int = 0
    reason: str = ""


class DeliveryDoc(Stored):
    """One event delivered to one subscription."""

    subscription_id: str
    partner_id: str
    case_id: str
    event_id: str
    event_type: WebhookEvent
    webhook_id: str
    body: str  # the exact JSON signed and sent (thin: ids, status, links)
    traceparent: str = ""
    status: DeliveryStatus = DeliveryStatus.QUEUED
    created_at: datetime
    first_attempt_at: datetime | None = None
    next_at: datetime | None = None
    delivered_at: datetime | None = None
    replays: int = 0
    attempts: list[DeliveryAttempt] = Field(default_factory=list)

    def to_doc(self) -> Document:
        """Stored form; enums as values."""
        return self.model_dump(by_alias=True, mode="python") | {
            "event_type": self.event_type.value,
            "status": self.status.value,
            "attempts": [a.model_dump() | {"outcome": a.outcome.value} for a in self.attempts],
        }


def bucket_key(bucket: int, kind: str = "email") -> str:
    """The `_id` of a due-queue bucket (emails `b:<n>`, webhooks `w:<n>`)."""
    return f"b:{bucket}" if kind == "email" else f"w:{bucket}"


def cursor_key(kind: str = "email") -> str:
    """The `_id` of a due-queue's cursor."""
    return CURSOR_ID if kind == "email" else f"{CURSOR_ID}:{kind}"


class Store:
    """Notify's reads and writes; callers hold the case's lock around case writes and the
    due-queue lock around bucket writes."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.cases = db["cases"]
        self.sends = db["sends"]
        self.due = db["due"]
        self.subscriptions = db["subscriptions"]
        self.partners = db["partners"]
        self.deliveries = db["deliveries"]

    # cases

    async def case(self, case_id: str) -> CaseDoc | None:
        """One case by id."""
        doc = await self.cases.find_one({"_id": case_id})
        return None if doc is None else CaseDoc.model_validate(doc)

    async def save_case(self, case: CaseDoc) -> None:
        """Write the whole case (its writer holds its lock)."""
        doc = case.to_doc()
        doc.pop("_id")
        await self.cases.update_one({"_id": case.id}, {"$set": doc}, upsert=True)

    # sends

    async def queue(self, send: SendDoc) -> bool:
        """Insert a send; False when it was queued before (the same event, redelivered)."""
        try:
            await self.sends.insert_one(send.to_doc())
            return True
        except DuplicateKeyError:
            return False

    async def send(self, send_id: str) -> SendDoc | None:
        """One send by id."""
        doc = await self.sends.find_one({"_id": send_id})
        return None if doc is None else SendDoc.model_validate(doc)

    async def record_attempt(
        self,
        send_id: str,
        attempt: Attempt,
        status: SendStatus,
        next_at: datetime | None,
        sent_at: datetime | None = None,
    ) -> None:
        """Append an attempt and move the send on."""
        stored = attempt.model_dump() | {"outcome": attempt.outcome.value}
        await self.sends.update_one(
            {"_id": send_id},
            {
                "$push": {"attempts": stored},
                "$set": {"status": status.value, "next_at": next_at, "sent_at": sent_at},
            },
        )

    # the due-queues (`kind` = "email" or "webhook")

    async def bucket(self, bucket: int, kind: str = "email") -> list[str]:
        """The ids filed under a bucket."""
        doc = await self.due.find_one({"_id": bucket_key(bucket, kind)})
        return list(doc.get("ids", [])) if doc else []

    async def file(self, bucket: int, send_id: str, kind: str = "email") -> None:
        """File an id under a bucket (once), in one write."""
        await self.due.update_one(
            {"_id": bucket_key(bucket, kind)}, {"$addToSet": {"ids": send_id}}, upsert=True
        )

    async def unfile(self, bucket: int, send_id: str, kind: str = "email") -> None:
        """Take an id out of a bucket."""
        await self.due.update_one({"_id": bucket_key(bucket, kind)}, {"$pull": {"ids": send_id}})

    async def drop_bucket(self, bucket: int, kind: str = "email") -> None:
        """Remove a bucket (its writer, holding the lock, saw it empty)."""
        await self.due.delete_one({"_id": bucket_key(bucket, kind)})

    async def cursor(self, kind: str = "email") -> int | None:
        """The oldest bucket that may still hold work."""
        doc = await self.due.find_one({"_id": cursor_key(kind)})
        return None if doc is None else int(doc["bucket"])

    async def set_cursor(self, bucket: int, kind: str = "email") -> None:
        """Move the cursor."""
        await self.due.update_one(
            {"_id": cursor_key(kind)}, {"$set": {"bucket": bucket}}, upsert=True
        )

    # subscriptions (their writer holds the subscription's lock; a partner's index, the
    # partner's lock)

    async def subscription(self, subscription_id: str) -> SubscriptionDoc | None:
        """One subscription by id."""
        doc = await self.subscriptions.find_one({"_id": subscription_id})
        return None if doc is None else SubscriptionDoc.model_validate(doc)

    async def subscriptions_of(self, subscription_ids: list[str]) -> list[SubscriptionDoc]:
        """Subscriptions by id, in the order given."""
        if not subscription_ids:
            return []
        found = {
            d["_id"]: SubscriptionDoc.model_validate(d)
            async for d in self.subscriptions.find({"_id": {"$in": subscription_ids}})
        }
        return [found[i] for i in subscription_ids if i in found]

    async def save_subscription(self, sub: SubscriptionDoc) -> None:
        """Write the whole subscription."""
        doc = sub.to_doc()
        doc.pop("_id")
        await self.subscriptions.update_one({"_id": sub.id}, {"$set": doc}, upsert=True)

    async def delete_subscription(self, subscription_id: str) -> None:
        """Remove a subscription."""
        await self.subscriptions.delete_one({"_id": subscription_id})

    async def partner_subscriptions(self, partner_id: str) -> list[str]:
        """The ids of a partner's subscriptions, oldest first."""
        doc = await self.partners.find_one({"_id": partner_id})
        return list(doc.get("subscriptions", [])) if doc else []

    async def add_partner_subscription(self, partner_id: str, subscription_id: str) -> None:
        """Index a new subscription under its partner."""
        await self.partners.update_one(
            {"_id": partner_id}, {"$push": {"subscriptions": subscription_id}}, upsert=True
        )

    async def remove_partner_subscription(self, partner_id: str, subscription_id: str) -> None:
        """Take a subscription out of its partner's index."""
        await self.partners.update_one(
            {"_id": partner_id}, {"$pull": {"subscriptions": subscription_id}}
        )

    # deliveries

    async def queue_delivery(self, delivery: DeliveryDoc) -> bool:
        """Insert a delivery; False when it was queued before (a redelivered event)."""
        try:
            await self.deliveries.insert_one(delivery.to_doc())
            return True
        except DuplicateKeyError:
            return False

    async def delivery(self, delivery_id: str) -> DeliveryDoc | None:
        """One delivery by id."""
        doc = await self.deliveries.find_one({"_id": delivery_id})
        return None if doc is None else DeliveryDoc.model_validate(doc)

    async def deliveries_of(self, delivery_ids: list[str]) -> list[DeliveryDoc]:
        """Deliveries by id, in the order given."""
        if not delivery_ids:
            return []
        found = {
            d["_id"]: DeliveryDoc.model_validate(d)
            async for d in self.deliveries.find({"_id": {"$in": delivery_ids}})
        }
        return [found[i] for i in delivery_ids if i in found]

    async def save_delivery(self, delivery: DeliveryDoc) -> None:
        """Write the whole delivery (its one writer: the worker, or a replay of a dead one)."""
        doc = delivery.to_doc()
        doc.pop("_id")
        await self.deliveries.update_one({"_id": delivery.id}, {"$set": doc})
