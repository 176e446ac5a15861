"""The reports service's collections, their typed documents, and every store operation it uses.

Every read on a hot path is by `_id` (the store contract, DESIGN.md section 4):
- `cases`: the aggregate, `_id` = case id. What `case-submitted` said of the case (codes, ids,
  the contact sealed), the opinions received (sealed; one may wait here for its case), the list
  of report versions issued (numbers and dates only), and the outbox of `report-ready`; the
  reference of the case's key, and when the case was erased.
- `versions`: one document per report version, `_id` = `<report id>:v<n>`: the composed report
  sealed, and its rendered PDF sealed once rendered.
- `report_ids`: `_id` = report id -> case id, so a report link resolves in one look-up.

Sealed values are opened only to compose or serve a report; each is sealed under its case's own
key (`avis.shared.case_keys`: key id `case.<key_ref>`) and bound (associated data) to where it
is kept (`avis.reports.rules.*_aad`), so none can be moved to another case or version. Once the
case is erased (its key destroyed), its versions are deleted and its sealed values dropped.
"""

from datetime import datetime, timedelta
from typing import Any

from pydantic import Field
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from avis.reports.models import ReportVersion
from avis.reports.rules import ACTIONS
from avis.shared.access_log import TrailPage
from avis.shared.audit import AuditEntry, AuditRecord, AuditTrail
from avis.shared.envelope import Event
from avis.shared.events import Language, Question, Specialty
from avis.shared.mongo import Document, Stored
from avis.shared.outbox import new_with_events, with_events
from avis.shared.sealing import Sealed

WITHOUT_OUTBOX = {"outbox": 0, "outbox_pending": 0}


class PhysicianLink(Stored):
    """The keyed digest of the secret of the link that opens a case's report for its treating
    physician (never the secret), and the id of the key it was derived from."""

    kid: str
    digest: str


class CaseRecord(Stored):
    """What `avis.case.submitted.v1` told reports of a case."""

    reference: str
    specialty: Specialty
    language: Language
    questions: list[Question]
    patient_id: str | None = None
    partner_id: str | None = None
    consent_scopes: list[str] = Field(default_factory=list)
    submitted_at: datetime
    contact: Sealed | None = Field(None, description="Dropped when the case is withdrawn.")
    physician_link: PhysicianLink | None = Field(
        None, description="With `share_with_physician`: the keyed digest of the link's secret."
    )


class ReceivedOpinion(Stored):
    """One opinion version as `avis.review.completed.v1` brought it, sealed again for reports."""

    version: int
    event_id: str
    assignment_id: str
    reviewer_id: str
    specialty: Specialty
    completed_at: datetime
    sealed: Sealed
    # The case's sequence number its report goes out with: the opinion's, or below a follow-up
    # question open when it was published (`ReviewCompleted.report_seq`).
    seq: int = 0


class ReceivedAddendum(Stored):
    """The specialist's answer to a follow-up question, as `avis.review.follow-up-answered.v1`
    brought it (the question with it), sealed again for reports (`rules.addendum_aad`)."""

    follow_up_id: str
    number: int
    event_id: str
    reviewer_id: str
    answered_at: datetime
    sealed: Sealed
    seq: int = 0


class VersionEntry(Stored):
    """A report version issued for the case: numbers and dates, nothing clinical."""

    version: int
    opinion_version: int
    reviewer_id: str
    language: Language
    issued_at: datetime
    seq: int = 0  # the case's sequence number it was announced with (`rules.report_seq`)
    addenda: int = 0  # how many answers to follow-up questions it carries

    def view(self, *, report_id: str, case_id: str, url: str) -> ReportVersion:
        """This version as a reader of the case's report sees it listed."""
        return ReportVersion(
            report_id=report_id,
            case_id=case_id,
            version=self.version,
            opinion_version=self.opinion_version,
            language=self.language,
            issued_at=self.issued_at,
            url=url,
        )


class CaseDoc(Stored):
    """The case aggregate (without its outbox)."""

    id: str = Field(alias="_id")
    report_id: str
    case: CaseRecord | None = None
    # The case's key in the key service (None: its values are under the service's keyring).
    key_ref: str | None = None
    withdrawn_at: datetime | None = None
    # Erased: its key destroyed, its versions deleted, its contact and opinions dropped.
    erased_at: datetime | None = None
    opinions: list[ReceivedOpinion] = Field(default_factory=list)
    versions: list[VersionEntry] = Field(default_factory=list)
    traceparent: str = ""
    created_at: datetime
    # The answers to follow-up questions, in their order: each one gets a report version.
    addenda: list[ReceivedAddendum] = Field(default_factory=list)


class PdfCache(Stored):
    """A rendered PDF, sealed, with its ETag."""

    sealed: Sealed
    etag: str
    size: int
    rendered_at: datetime


class VersionDoc(Stored):
    """One report version: the composed report, sealed, and its PDF once rendered."""

    id: str = Field(alias="_id")
    report_id: str
    case_id: str
    version: int
    opinion_version: int
    language: Language
    issued_at: datetime
    report: Sealed
    pdf: PdfCache | None = None
    # The PDF of the pseudonymised report a reviewer reads, once rendered.
    reviewer_pdf: PdfCache | None = None
    traceparent: str = Field("", description="The case's trace, which rendering joins.")


async def init(db: AsyncDatabase[Document]) -> None:
    """Nothing to index: every look-up is by `_id`, the relay's too."""
    del db


class Store:
    """Reports' collections; writers of a case hold its lock (the case id) around them."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.cases = db["cases"]
        self.versions = db["versions"]
        self.report_ids = db["report_ids"]
        # the access trail: one hash chain per case of every read of its report
        self.trail = AuditTrail(db)

    # cases

    async def audit(
        self, case_id: str, record: AuditRecord, at: datetime, fold: timedelta | None = None
    ) -> AuditEntry | None:
        """Append to a case's access trail (None: folded into the last entry, see
        `AuditTrail.append`); the caller holds the trail's lock."""
        return await self.trail.append(case_id, record, at, fold=fold)

    async def trail_page(self, case_id: str, after: int, limit: int) -> TrailPage:
        """Up to `limit` entries of a case's access trail after position `after`."""
        entries, last = await self.trail.page(case_id, after=after, limit=limit)
        return TrailPage(case_id, entries, last, "reports", ACTIONS)

    async def case(self, case_id: str) -> CaseDoc | None:
        """The case aggregate, without its outbox."""
        doc = await self.cases.find_one({"_id": case_id}, WITHOUT_OUTBOX)
        return None if doc is None else CaseDoc.model_validate(doc)

    async def insert_case(self, case: CaseDoc) -> bool:
        """A new case aggregate; False if one with its id exists already."""
        try:
            await self.cases.insert_one(new_with_events(case.to_doc(), []))
        except DuplicateKeyError:
            return False
        return True

    async def set_case_record(
        self, case_id: str, record: CaseRecord, traceparent: str, key_ref: str | None
    ) -> None:
        """Record what `case-submitted` said of a case already known (an opinion came first)."""
        changes: dict[str, Any] = {"case": record.to_doc()}
        if traceparent:
            changes["traceparent"] = traceparent
        if key_ref is not None:
            changes["key_ref"] = key_ref
        await self.cases.update_one({"_id": case_id}, {"$set": changes})

    async def drop_parked(self, case_id: str) -> None:
        """Forget a case known only by opinions parked for it (never one submitted or withdrawn)."""
        await self.cases.delete_one({"_id": case_id, "case": None, "withdrawn_at": None})

    async def add_opinion(self, case_id: str, opinion: ReceivedOpinion) -> None:
        """Keep one more opinion version of the case."""
        await self.cases.update_one({"_id": case_id}, {"$push": {"opinions": opinion.to_doc()}})

    async def add_addendum(self, case_id: str, addendum: ReceivedAddendum) -> None:
        """Keep one more answer to a follow-up question of the case."""
        await self.cases.update_one({"_id": case_id}, {"$push": {"addenda": addendum.to_doc()}})

    async def add_version(self, case_id: str, entry: VersionEntry, events: list[Event]) -> None:
        """Record an issued version and the events it causes, in one write."""
        await self.cases.update_one(
            {"_id": case_id},
            with_events({"$push": {"versions": entry.to_doc()}}, events),
        )

    async def set_patient(self, case_id: str, patient_id: str) -> None:
        """Give a partner-filed case the patient who claimed it."""
        await self.cases.update_one({"_id": case_id}, {"$set": {"case.patient_id": patient_id}})

    async def set_withdrawn(self, case_id: str, at: datetime, *, forget: bool) -> None:
        """Mark a case withdrawn; with `forget`, drop the contact and opinions it will not need."""
        update: dict[str, Any] = {"$set": {"withdrawn_at": at}}
        if forget:
            update["$unset"] = {"case.contact": "", "opinions": ""}
        await self.cases.update_one({"_id": case_id}, update)

    async def erase_case(self, case_id: str, at: datetime, version_keys: list[str]) -> None:
        """Delete the case's report versions (with their PDFs), then drop its contact and
        opinions and mark it erased: a redelivery finds the mark only once all is gone."""
        await self.versions.delete_many({"_id": {"$in": version_keys}})
        await self.cases.update_one(
            {"_id": case_id},
            {
                "$set": {"erased_at": at},
                "$unset": {"case.contact": "", "opinions": "", "addenda": ""},
            },
        )

    async def seal_case(self, case: CaseDoc, key_ref: str) -> None:
        """Keep a case's contact and opinions as given (sealed again under the case's key) and
        the key's reference (its writer holds its lock)."""
        fields: dict[str, Any] = {
            "key_ref": key_ref,
            "opinions": [o.to_doc() for o in case.opinions],
        }
        if case.case is not None and case.case.contact is not None:
            fields["case.contact"] = case.case.contact.model_dump()
        await self.cases.update_one({"_id": case.id}, {"$set": fields})

    # report ids

    async def claim_report_id(self, report_id: str, case_id: str) -> None:
        """Make `report_id` resolve to its case (idempotent)."""
        await self.report_ids.update_one(
            {"_id": report_id}, {"$set": {"case_id": case_id}}, upsert=True
        )

    async def case_of_report(self, report_id: str) -> str | None:
        """The case a report id belongs to."""
        doc = await self.report_ids.find_one({"_id": report_id})
        return None if doc is None else str(doc["case_id"])

    # versions

    async def version(self, key: str) -> VersionDoc | None:
        """One stored report version."""
        doc = await self.versions.find_one({"_id": key})
        return None if doc is None else VersionDoc.model_validate(doc)

    async def insert_version(self, version: VersionDoc) -> bool:
        """A new report version; False if one with its id exists already."""
        try:
            await self.versions.insert_one(version.to_doc())
        except DuplicateKeyError:
            return False
        return True

    async def seal_version(self, version: VersionDoc) -> None:
        """Keep a version's report and rendered PDFs as given (sealed again)."""
        fields: dict[str, Any] = {"report": version.report.model_dump()}
        for name, pdf in (("pdf", version.pdf), ("reviewer_pdf", version.reviewer_pdf)):
            if pdf is not None:
                fields[name] = pdf.to_doc()
        await self.versions.update_one({"_id": version.id}, {"$set": fields})

    async def set_pdf(self, key: str, pdf: PdfCache, *, pseudonymised: bool = False) -> None:
        """Keep a version's rendered PDF (or the pseudonymised one a reviewer reads)."""
        field = "reviewer_pdf" if pseudonymised else "pdf"
        await self.versions.update_one({"_id": key}, {"$set": {field: pdf.to_doc()}})
