"""The notify service's collections, typed document models and every Mongo operator it uses.

Every access is by `_id` equality (DESIGN.md section 4; FerretDB serves nothing else from an
index), so each costs the same however much is stored:

- `cases`, `_id` = case id: what notify knows of a case (its reference, the patient's
  language, the contact sealed under the case's key and notify's own associated data, what the
  patient was told), the events parked until its submission arrives, and the ids of its sends
  in order. An erased case keeps its ids, codes and times, and nothing sealed but the address
  its erasure's email goes to, under a key of its own, until that email is done with. It keeps
  the ids of the events applied to it, in the write of their effect: a redelivery is turned
  away by the case itself, not by the inbox (handlers.py).
- `sends`, `_id` = `email:<event id>`: one queued email per notification, its attempts and its
  status. A redelivered event queues nothing new. A physician's copy, once sent, carries on its
  outbox the `avis.report.physician-copy-sent.v1` it tells (avis.shared.outbox).
- `subscriptions`, `_id` = subscription id: a partner's endpoint, the event types it wants,
  its signing secrets (sealed at rest), its state and the ids of its latest deliveries (a
  fan-out reads it and notes its delivery there in one request: `take_delivery`).
- `partners`, `_id` = partner id: the ids of the partner's subscriptions.
- `deliveries`, `_id` = `wh:<event id>:<subscription id>`: one webhook delivery (one event to
  one subscription) and its attempts.
- `fhir_endpoints`, `_id` = institution code: the state of the FHIR endpoint a physician's
  institution takes reports at (its URL, failed posts in a row, disabled or not), as a
  subscription's for a partner.
- `due`: three due-queues of the same shape, one of sends (`_id` = `b:<bucket>`, its cursor
  `cursor`), one of deliveries (`_id` = `w:<bucket>`, its cursor `cursor:webhook`) and one of
  the sends posted as FHIR documents (`_id` = `f:<bucket>`, its cursor `cursor:fhir`), each
  worked by its own loop, so an endpoint never stands in the emails' way. A queue is
  one small document per time bucket listing the ids due in it, plus a cursor, the oldest
  bucket that may still hold work. Its worker walks buckets from the cursor to now by `_id`, so
  finding due work costs what is due, not what was ever sent. Bucket documents are written
  under one in-process lock per queue (the store does not serialise writers), by the one
  worker of a deployment: the holder of the queue's lease.
- `handoffs`, `_id` = `<queue>:<item id>`: what any copy filed and the queue's worker has not
  yet moved into a bucket (an upsert per item, those of one event in one request, never a
  shared document written by two copies). It holds only filings not yet done with or moved
  into a bucket, so the worker reads it whole, once a tick; an item due now is worked from
  there, and its hand-off deleted once it is done with (with the others done since the last
  read, in one bulk write).
- `expires_YYYYMMDD`: the retention calendar (avis.shared.retention): sends and deliveries are
  put on the day they are purged when they are queued (AVIS_NOTIFY_SEND_RETENTION_DAYS,
  AVIS_NOTIFY_DELIVERY_RETENTION_DAYS, 28 each); a case's list of sends and a subscription's of
  deliveries skip what is gone.
"""

import time
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from pymongo import DeleteOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from avis.notify.models import (
    AttemptView,
    Delivery,
    DeliveryAttemptView,
    DeliveryStatus,
    FhirEndpoint,
    Notification,
    Outcome,
    SendStatus,
    Subscription,
    SubscriptionCreated,
    Template,
    WebhookEvent,
)
from avis.notify.rules import CaseView, Retention
from avis.shared.envelope import Event
from avis.shared.events import Language
from avis.shared.mongo import Document, Stored
from avis.shared.outbox import with_events
from avis.shared.retention import Calendar, day_of, entry
from avis.shared.sealing import Sealed

# The three due-queues: of emails (sends), of webhook deliveries, and of the sends posted to a
# physician's institution as a FHIR document (`fhir.py`), which keep to the webhooks' limits.
DueQueueName = Literal["email", "webhook", "fhir"]
_BUCKET_PREFIX: dict[str, str] = {"email": "b", "webhook": "w", "fhir": "f"}
_CURSOR_ID: dict[str, str] = {"email": "cursor", "webhook": "cursor:webhook", "fhir": "cursor:fhir"}


def _whole(doc: Stored) -> Document:
    """The update that writes a whole document: its fields set, and those that are None (which
    `to_doc` leaves out) removed, so a field cleared in the model is cleared in the store."""
    written = doc.to_doc()
    written.pop("_id")
    cleared = {name: "" for name, value in doc.model_dump(by_alias=True).items() if value is None}
    return {"$set": written, "$unset": cleared} if cleared else {"$set": written}


def _changed(doc: Stored, before: Stored) -> Document:
    """The update that writes only what `doc` changed since `before` (the document as read):
    the fields set anew and those cleared; empty when nothing changed."""
    now, was = doc.to_doc(), before.to_doc()
    update: Document = {}
    if changed := {k: v for k, v in now.items() if k not in was or was[k] != v}:
        update["$set"] = changed
    if cleared := {k: "" for k in was if k not in now}:
        update["$unset"] = cleared
    return update


class ParkedEvent(BaseModel):
    """An event that arrived before its case's submission, as `Event.to_doc` wrote it."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: str


class Recipient(BaseModel):
    """All notify keeps of the patient's contact, sealed: where to write and in which language
    (no name, phone or birth date: no email uses them). A contact stored whole by an earlier
    version opens as one too."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    email: str
    preferred_language: Language


class CaseDoc(Stored):
    """What notify knows of one case."""

    id: str = Field(alias="_id")
    reference: str | None = None
    language: Language | None = None
    specialty: str | None = None
    patient_id: str | None = None
    # The case's key in the key service (None: its values are under the service's keyring).
    key_ref: str | None = None
    # A `Recipient`, sealed under the case key and `contact_aad(case id)`; once the case is
    # erased, the address
    # the erasure's email goes to, under that notice's own key, until the email is done with
    # and the key destroyed.
    contact: Sealed | None = None
    # A case its patient must claim: the one-time claim secret, sealed under the case key and
    # `claim_aad(case id)`.
    claim: Sealed | None = None
    # With the `share_with_physician` consent: the treating physician (a `PhysicianContact`:
    # their address and the secret of their link), sealed under the case key and
    # `physician_aad(case id)`.
    physician: Sealed | None = None
    physician_language: Language | None = None
    physician_institution: str | None = None  # a code (in clear on the submission too)
    traceparent: str = ""
    submitted: bool = False
    withdrawn: bool = False
    erased_at: datetime | None = None  # its key destroyed: its contact and claim dropped
    notice_send: str | None = None  # the send telling the patient it is erased (not cancelled)
    told_due: date | None = None
    report_version: int = 0
    told_abroad: bool = False
    parked: list[dict[str, Any]] = Field(default_factory=list)
    # The ids of the events applied to it (not those parked): a redelivery of one changes
    # nothing, and is turned away here rather than by an inbox look-up (handlers.py).
    applied: list[str] = Field(default_factory=list)
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
        return CaseView(
            self.submitted,
            self.withdrawn,
            self.told_due,
            self.report_version,
            self.patient_id,
            erased=self.erased_at is not None,
            told_abroad=self.told_abroad,
        )

    def to_doc(self) -> Document:
        """Stored form; dates as ISO text (BSON has no date-only type), enums as values."""
        doc = super().to_doc()
        if self.told_due is not None:
            doc["told_due"] = self.told_due.isoformat()
        if self.language is not None:
            doc["language"] = self.language.value
        if self.physician_language is not None:
            doc["physician_language"] = self.physician_language.value
        return doc


def contact_aad(case_id: str) -> str:
    """The associated data notify seals a case's contact under (bound to the case)."""
    return f"avis-notify:contact:{case_id}"


def physician_aad(case_id: str) -> str:
    """The associated data notify seals a case's treating physician under (bound to the case)."""
    return f"avis-notify:physician:{case_id}"


def recipient_aad(send_id: str) -> str:
    """The associated data notify seals a professional's address under (bound to the send)."""
    return f"avis-notify:recipient:{send_id}"


def claim_aad(case_id: str) -> str:
    """The associated data notify seals a case's claim secret under (bound to the case)."""
    return f"avis-notify:claim:{case_id}"


class Attempt(BaseModel):
    """One attempt to send."""

    at: datetime
    outcome: Outcome
    code: int | None = None
    reason: str = ""


class SendDoc(Stored):
    """One queued send: an email to the patient."""

    id: str = Field(alias="_id")
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
    # An email to a professional (not the patient): their `ProfessionalContact`, sealed under
    # the case key and `recipient_aad(send id)`.
    recipient: Sealed | None = None
    # A send of the `fhir` channel: the code of the institution whose endpoint it is posted to
    # (a code, in clear on the case too); its posts at once are capped per institution.
    institution: str | None = None
    # A post that waited for its disabled endpoint: when the endpoint was enabled again (its
    # retry window counts from then, not from its first attempt).
    resumed_at: datetime | None = None
    # Not stored: its case as the handler that queued it had it, and when (monotonic), if it
    # was queued so.
    _case: tuple[CaseDoc, float] | None = PrivateAttr(default=None)

    def handed_with(self, case: CaseDoc) -> "SendDoc":
        """This send, with its case as its queuing handler holds it (written before the send
        is handed off): its sender in this copy then need not read it again, at once."""
        self._case = (case.model_copy(), time.monotonic())
        return self

    def case_as_queued(self, within: float) -> CaseDoc | None:
        """Its case as the handler that queued it had it, if that was less than `within`
        seconds ago (None: read it from the store)."""
        if self._case is None or time.monotonic() - self._case[1] >= within:
            return None
        return self._case[0]

    def to_doc(self) -> Document:
        """Stored form; enums as their values."""
        return super().to_doc() | {
            "template": self.template.value,
            "language": self.language.value,
            "status": self.status.value,
            "attempts": [a.model_dump() | {"outcome": a.outcome.value} for a in self.attempts],
        }

    def view(self) -> Notification:
        """What a coordinator or the patient sees of it."""
        return Notification(
            id=self.id,
            case_id=self.case_id,
            event_id=self.event_id,
            channel=self.channel,
            template=self.template,
            language=self.language,
            status=self.status,
            message_id=self.message_id,
            created_at=self.created_at,
            next_attempt_at=self.next_at if self.status is SendStatus.QUEUED else None,
            sent_at=self.sent_at,
            attempts=[AttemptView(**a.model_dump()) for a in self.attempts],
        )


class SecretDoc(BaseModel):
    """One signing secret (`whsec_...`), sealed; `expires_at` set once it was rotated out."""

    id: str
    sealed: Sealed
    created_at: datetime
    expires_at: datetime | None = None


class SubscriptionDoc(Stored):
    """A partner's webhook endpoint."""

    id: str = Field(alias="_id")
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
        return super().to_doc() | {
            "event_types": [e.value for e in self.event_types],
            "secrets": [s.model_dump() for s in self.secrets],
        }

    def view(self, now: datetime) -> Subscription:
        """What a partner or a coordinator sees of it at `now` (never a secret)."""
        grace = [s.expires_at for s in self.secrets if s.expires_at and s.expires_at > now]
        return Subscription(
            id=self.id,
            partner_id=self.partner_id,
            url=self.url,
            event_types=self.event_types,
            description=self.description,
            enabled=self.enabled,
            disabled_reason=self.disabled_reason,
            disabled_at=self.disabled_at,
            consecutive_failures=self.consecutive_failures,
            previous_secrets_expire_at=max(grace) if grace else None,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    def created(self, now: datetime, secret: str) -> SubscriptionCreated:
        """Its view when just created, with the signing secret shown this once."""
        return SubscriptionCreated(**self.view(now).model_dump(), secret=secret)


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

    id: str = Field(alias="_id")
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
    # When the retention calendar purges it (None: queued before retention, kept).
    purge_at: datetime | None = None
    # Not stored: its subscription as the fan-out that queued it just read it, if it did.
    _subscription: SubscriptionDoc | None = PrivateAttr(default=None)

    def queued_for(self, sub: SubscriptionDoc) -> "DeliveryDoc":
        """This delivery, with its subscription as its fan-out read it (its worker in this copy
        then need not read it again)."""
        self._subscription = sub
        return self

    @property
    def subscription_as_queued(self) -> SubscriptionDoc | None:
        """Its subscription as its fan-out read it (None: read from the store)."""
        return self._subscription

    def to_doc(self) -> Document:
        """Stored form; enums as values."""
        return super().to_doc() | {
            "event_type": self.event_type.value,
            "status": self.status.value,
            "attempts": [a.model_dump() | {"outcome": a.outcome.value} for a in self.attempts],
        }

    def view(self) -> Delivery:
        """What a partner or a coordinator sees of it, every attempt included."""
        return Delivery(
            id=self.id,
            subscription_id=self.subscription_id,
            case_id=self.case_id,
            event_id=self.event_id,
            event_type=self.event_type,
            webhook_id=self.webhook_id,
            status=self.status,
            created_at=self.created_at,
            next_attempt_at=self.next_at if self.status is DeliveryStatus.QUEUED else None,
            delivered_at=self.delivered_at,
            replays=self.replays,
            attempts=[DeliveryAttemptView(**a.model_dump()) for a in self.attempts],
        )


class EndpointDoc(Stored):
    """The state of one institution's FHIR endpoint, kept as a subscription's: the failed posts
    in a row, and whether it is disabled (then for the URL it was disabled at: an endpoint set
    anew in the settings starts afresh)."""

    id: str = Field(alias="_id")  # the institution's code
    url: str
    consecutive_failures: int = 0
    enabled: bool = True
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    updated_at: datetime | None = None
    # The sends that wait for it to be re-enabled (resumed at once when it is).
    waiting: list[str] = Field(default_factory=list)

    def view(self) -> FhirEndpoint:
        """What a coordinator sees of it: never its URL."""
        return FhirEndpoint(
            institution=self.id,
            enabled=self.enabled,
            consecutive_failures=self.consecutive_failures,
            disabled_reason=self.disabled_reason,
            disabled_at=self.disabled_at,
            waiting=len(self.waiting),
        )


def bucket_key(bucket: int, queue: DueQueueName) -> str:
    """The `_id` of a due-queue's bucket (emails `b:<n>`, webhooks `w:<n>`)."""
    return f"{_BUCKET_PREFIX[queue]}:{bucket}"


def cursor_key(queue: DueQueueName) -> str:
    """The `_id` of a due-queue's cursor."""
    return _CURSOR_ID[queue]


SENDS = "sends"
DELIVERIES = "deliveries"


class Store:
    """Notify's reads and writes; callers hold the case's lock around case writes and the
    due-queue lock around bucket writes."""

    def __init__(self, db: AsyncDatabase[Document], retention: Retention | None = None) -> None:
        self.cases = db["cases"]
        self.sends = db[SENDS]
        self.due = db["due"]
        self.handoffs = db["handoffs"]
        self.subscriptions = db["subscriptions"]
        self.partners = db["partners"]
        self.deliveries = db[DELIVERIES]
        self.endpoints = db["fhir_endpoints"]
        # Sends and deliveries are purged `retention` after they are queued (avis.notify.rules).
        self.retention = retention or Retention()
        self.calendar = Calendar(db)

    # cases

    async def case(self, case_id: str) -> CaseDoc | None:
        """One case by id."""
        doc = await self.cases.find_one({"_id": case_id})
        return None if doc is None else CaseDoc.model_validate(doc)

    async def save_case(self, case: CaseDoc) -> None:
        """Write the whole case (its writer holds its lock)."""
        await self.cases.update_one({"_id": case.id}, _whole(case), upsert=True)

    # sends

    async def keep_queued(self, sends: list[SendDoc], deliveries: list[DeliveryDoc]) -> None:
        """Put the sends and deliveries an event is about to queue on the calendar, to be purged
        `retention` after they were queued: one request per day of the calendar (one, unless
        the two retentions differ), whichever of them were there already (a redelivery)."""
        days: dict[str, list[Document]] = {}
        for send in sends:
            until = send.created_at + self.retention.sends
            days.setdefault(day_of(until), []).append(entry(SENDS, send.id))
        for delivery in deliveries:
            delivery.purge_at = delivery.created_at + self.retention.deliveries
            days.setdefault(day_of(delivery.purge_at), []).append(entry(DELIVERIES, delivery.id))
        for day, entries in days.items():
            try:
                await self.calendar.db[day].insert_many(entries, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if not errors or any(e.get("code") != 11000 for e in errors):
                    raise

    async def queue(self, send: SendDoc, *, kept: bool = False) -> bool:
        """Insert a send, on the calendar to be purged `retention.sends` after it was queued
        (put there first, unless `kept` by `keep_queued` already: a crash in between leaves an
        entry that purges nothing, never a send kept for ever); False when it was queued before
        (the same event, redelivered)."""
        if not kept:
            await self.calendar.keep_until(SENDS, send.id, send.created_at + self.retention.sends)
        try:
            await self.sends.insert_one(send.to_doc())
            return True
        except DuplicateKeyError:
            return False

    async def send(self, send_id: str) -> SendDoc | None:
        """One send by id."""
        doc = await self.sends.find_one({"_id": send_id})
        return None if doc is None else SendDoc.model_validate(doc)

    async def sends_of(self, send_ids: list[str]) -> list[SendDoc]:
        """Sends by id, in one request (those that are gone left out)."""
        if not send_ids:
            return []
        found = {
            d["_id"]: SendDoc.model_validate(d)
            async for d in self.sends.find({"_id": {"$in": send_ids}})
        }
        return [found[i] for i in send_ids if i in found]

    async def record_attempt(
        self,
        send_id: str,
        attempt: Attempt,
        status: SendStatus,
        next_at: datetime | None,
        sent_at: datetime | None = None,
        events: Sequence[Event] = (),
    ) -> None:
        """Append an attempt and move the send on; with `events` (what its sending tells), on
        the send's outbox in the same write (the writer holds the send's outbox lock)."""
        stored = attempt.model_dump() | {"outcome": attempt.outcome.value}
        update = {
            "$push": {"attempts": stored},
            "$set": {"status": status.value, "next_at": next_at, "sent_at": sent_at},
        }
        await self.sends.update_one({"_id": send_id}, with_events(update, events))

    async def cancel_send(self, send_id: str) -> bool:
        """Cancel a send still queued (its case was erased); False if it was no longer queued."""
        done = await self.sends.update_one(
            {"_id": send_id, "status": SendStatus.QUEUED.value},
            {"$set": {"status": SendStatus.CANCELLED.value, "next_at": None}},
        )
        return done.modified_count == 1

    # the due-queues (`queue`: which one, of emails or of webhook deliveries)

    async def bucket(self, bucket: int, queue: DueQueueName) -> list[str]:
        """The ids filed under a bucket."""
        doc = await self.due.find_one({"_id": bucket_key(bucket, queue)})
        return list(doc.get("ids", [])) if doc else []

    async def file(self, bucket: int, item_id: str, queue: DueQueueName) -> None:
        """File an id under a bucket (once), in one write."""
        await self.due.update_one(
            {"_id": bucket_key(bucket, queue)}, {"$addToSet": {"ids": item_id}}, upsert=True
        )

    async def unfile(self, bucket: int, item_id: str, queue: DueQueueName) -> None:
        """Take an id out of a bucket."""
        await self.due.update_one({"_id": bucket_key(bucket, queue)}, {"$pull": {"ids": item_id}})

    async def drop_bucket(self, bucket: int, queue: DueQueueName) -> None:
        """Remove a bucket (its writer, holding the lock, saw it empty)."""
        await self.due.delete_one({"_id": bucket_key(bucket, queue)})

    async def hand_off(self, items: Sequence[tuple[DueQueueName, str, datetime]]) -> None:
        """Leave items (queue, item id, due at) for their queues' workers to file (from any
        copy): one upsert each, all in one request."""
        await self.handoffs.bulk_write(
            [
                UpdateOne(
                    {"_id": f"{queue}:{item_id}"},
                    {"$set": {"queue": queue, "item": item_id, "at": at}},
                    upsert=True,
                )
                for queue, item_id, at in items
            ]
        )

    async def handed_off(self, queue: DueQueueName) -> list[tuple[str, datetime]]:
        """The items left for the queue's worker, and when each is due (a small collection:
        only what no worker has taken yet)."""
        found = self.handoffs.find({"queue": queue})
        return [(doc["item"], doc["at"]) async for doc in found]

    async def take_handoffs(self, queue: DueQueueName, taken: dict[str, datetime]) -> None:
        """Forget the filings the worker is done with, in one ordered bulk write of deletes by
        `_id` (each unless it was filed again meanwhile, at another time)."""
        if taken:
            await self.handoffs.bulk_write(
                [DeleteOne({"_id": f"{queue}:{item}", "at": at}) for item, at in taken.items()]
            )

    async def cursor(self, queue: DueQueueName) -> int | None:
        """The oldest bucket that may still hold work."""
        doc = await self.due.find_one({"_id": cursor_key(queue)})
        return None if doc is None else int(doc["bucket"])

    async def set_cursor(self, bucket: int, queue: DueQueueName) -> None:
        """Move the cursor."""
        await self.due.update_one(
            {"_id": cursor_key(queue)}, {"$set": {"bucket": bucket}}, upsert=True
        )

    # FHIR endpoints (their writer, the FHIR queue's worker, holds the endpoint's lock)

    async def endpoint(self, institution: str) -> EndpointDoc | None:
        """One institution's FHIR endpoint state by its code."""
        doc = await self.endpoints.find_one({"_id": institution})
        return None if doc is None else EndpointDoc.model_validate(doc)

    async def endpoints_of(self, institutions: list[str]) -> list[EndpointDoc]:
        """The states of the institutions' FHIR endpoints by code, in one read (those never
        posted to left out)."""
        if not institutions:
            return []
        found = self.endpoints.find({"_id": {"$in": institutions}})
        return [EndpointDoc.model_validate(d) async for d in found]

    async def save_endpoint(self, endpoint: EndpointDoc) -> None:
        """Write the whole endpoint state."""
        await self.endpoints.update_one({"_id": endpoint.id}, _whole(endpoint), upsert=True)

    async def wait_send(self, send_id: str, until: datetime) -> None:
        """A send still queued waits for its endpoint: looked at again at `until`."""
        await self.sends.update_one(
            {"_id": send_id, "status": SendStatus.QUEUED.value}, {"$set": {"next_at": until}}
        )

    async def resume_sends(self, send_ids: list[str], at: datetime) -> None:
        """The waiting sends still queued, due at `at`, their retry window counted from then."""
        if send_ids:
            await self.sends.update_many(
                {"_id": {"$in": send_ids}, "status": SendStatus.QUEUED.value},
                {"$set": {"next_at": at, "resumed_at": at}},
            )

    # subscriptions (their writer holds the subscription's lock; a partner's index, the
    # partner's lock)

    async def subscription(self, subscription_id: str) -> SubscriptionDoc | None:
        """One subscription by id."""
        doc = await self.subscriptions.find_one({"_id": subscription_id})
        return None if doc is None else SubscriptionDoc.model_validate(doc)

    async def subscription_ids(self) -> list[str]:
        """Every subscription's id: reads the whole collection (an operator's re-seal only)."""
        return [str(d["_id"]) async for d in self.subscriptions.find({}, {"_id": 1})]

    async def subscriptions_of(self, subscription_ids: list[str]) -> list[SubscriptionDoc]:
        """Subscriptions by id, in the order given."""
        if not subscription_ids:
            return []
        found = {
            d["_id"]: SubscriptionDoc.model_validate(d)
            async for d in self.subscriptions.find({"_id": {"$in": subscription_ids}})
        }
        return [found[i] for i in subscription_ids if i in found]

    async def save_subscription(
        self, sub: SubscriptionDoc, before: SubscriptionDoc | None = None
    ) -> None:
        """Write the whole subscription, or with `before` (as it was read) only the fields
        that changed since: its writers (the partner's requests at any copy, the webhook
        worker, the copies that queue deliveries) then never write back each other's fields."""
        update = _whole(sub) if before is None else _changed(sub, before)
        if update:
            await self.subscriptions.update_one({"_id": sub.id}, update, upsert=before is None)

    async def take_delivery(
        self, subscription_id: str, delivery_id: str, event_type: WebhookEvent
    ) -> SubscriptionDoc | None:
        """A subscription as it is once `delivery_id` joined its latest deliveries (once: a
        redelivered event's is there already), read and written in one request; only if it is
        enabled and wants `event_type` (None: it does not, or it is gone, and nothing is
        written)."""
        doc = await self.subscriptions.find_one_and_update(
            {"_id": subscription_id, "enabled": True, "event_types": event_type.value},
            {"$addToSet": {"recent": delivery_id}},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else SubscriptionDoc.model_validate(doc)

    async def drop_recent(self, subscription_id: str, drop: list[str]) -> None:
        """Drop deliveries that fell out of a subscription's latest (each its own write: the
        store has no `$slice`)."""
        for old in drop:
            await self.subscriptions.update_one(
                {"_id": subscription_id}, {"$pull": {"recent": old}}
            )

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

    async def queue_delivery(self, delivery: DeliveryDoc, *, kept: bool = False) -> bool:
        """Insert a delivery, on the calendar to be purged `retention.deliveries` after it was
        queued (first, as a send, unless `kept`); False when it was queued before (a redelivered
        event)."""
        if not kept:
            delivery.purge_at = delivery.created_at + self.retention.deliveries
            await self.calendar.keep_until(DELIVERIES, delivery.id, delivery.purge_at)
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
        await self.deliveries.update_one({"_id": delivery.id}, _whole(delivery))

    async def replay_delivery(self, delivery: DeliveryDoc, at: datetime) -> None:
        """Write a dead delivery queued again at `at`, now kept `retention.deliveries` from then:
        taken off its earlier day, put on the later one."""
        purge_at = at + self.retention.deliveries
        await self.calendar.keep_until(DELIVERIES, delivery.id, purge_at)
        if delivery.purge_at is not None and day_of(delivery.purge_at) != day_of(purge_at):
            await self.calendar.release(DELIVERIES, delivery.id, delivery.purge_at)
        delivery.purge_at = purge_at
        await self.save_delivery(delivery)
