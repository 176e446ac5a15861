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
  lock (the store does not serialise writers), by the one sender of a deployment.
"""

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from avis.notify.rules import CaseView, Outcome, SendStatus, Template
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


def bucket_key(bucket: int) -> str:
    """The `_id` of a due-queue bucket."""
    return f"b:{bucket}"


class Store:
    """Notify's reads and writes; callers hold the case's lock around case writes and the
    due-queue lock around bucket writes."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.cases = db["cases"]
        self.sends = db["sends"]
        self.due = db["due"]

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

    # the due-queue

    async def bucket(self, bucket: int) -> list[str]:
        """The send ids filed under a bucket."""
        doc = await self.due.find_one({"_id": bucket_key(bucket)})
        return list(doc.get("ids", [])) if doc else []

    async def file(self, bucket: int, send_id: str) -> None:
        """File a send under a bucket (once)."""
        if send_id in await self.bucket(bucket):
            return
        await self.due.update_one(
            {"_id": bucket_key(bucket)}, {"$push": {"ids": send_id}}, upsert=True
        )

    async def unfile(self, bucket: int, send_id: str) -> None:
        """Take a send out of a bucket."""
        await self.due.update_one({"_id": bucket_key(bucket)}, {"$pull": {"ids": send_id}})

    async def drop_bucket(self, bucket: int) -> None:
        """Remove a bucket (its writer, holding the lock, saw it empty)."""
        await self.due.delete_one({"_id": bucket_key(bucket)})

    async def cursor(self) -> int | None:
        """The oldest bucket that may still hold work."""
        doc = await self.due.find_one({"_id": CURSOR_ID})
        return None if doc is None else int(doc["bucket"])

    async def set_cursor(self, bucket: int) -> None:
        """Move the cursor."""
        await self.due.update_one({"_id": CURSOR_ID}, {"$set": {"bucket": bucket}}, upsert=True)
