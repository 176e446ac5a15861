"""Intake's API schemas: requests and the views the API shows (the stored documents of
`store.py` turn themselves into these). A leaf: nothing of the service is imported here.

Requests are strict (`extra="forbid"`): a field the API does not know is a mistake worth a 422,
not something to store. Free text follows the platform's text rules (`avis.shared.text`): at
least one visible character, no control characters, stated as `pattern`s in the OpenAPI
document and refused in words.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from avis.shared.events import ConsentScope, Language, Question, Specialty, Urgency
from avis.shared.pages import Page
from avis.shared.text import Code, Declares, Text, must_match
from avis.shared.text import Name as NameText

# A pragmatic address check; deliverability is the notify service's concern.
EMAIL_PATTERN = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"  # noqa: E501
PHONE_PATTERN = r"^\+?[0-9][0-9 .()-]{5,30}$"
DOCUMENT_ID_PATTERN = r"^[0-9a-f]{64}$"
REFERENCE_PATTERN = r"^AV-[0-9]{4}-[0-9]{6,}$"

Name = Annotated[NameText, Field(max_length=100)]
Email = Annotated[str, must_match(EMAIL_PATTERN, "an email address"), Declares(EMAIL_PATTERN)]
Phone = Annotated[
    str,
    must_match(PHONE_PATTERN, "a phone number: digits, spaces, '.', '-', '(', ')', '+' first"),
    Declares(PHONE_PATTERN),
]
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_DATETIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _rfc3339_date(value: Any) -> Any:
    # Without this a number would pass as a Unix timestamp, which the schema does not allow.
    if isinstance(value, date) or (isinstance(value, str) and _DATE.match(value)):
        return value
    raise ValueError("must be a date as YYYY-MM-DD")


def _rfc3339_datetime(value: Any) -> Any:
    if isinstance(value, datetime) or (isinstance(value, str) and _DATETIME.match(value)):
        return value
    raise ValueError("must be an RFC 3339 date-time with a time zone")


IsoDate = Annotated[date, BeforeValidator(_rfc3339_date)]
IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_datetime)]


class CaseStatus(StrEnum):
    """Where a case stands, as the patient sees it: it follows the newest fact of the case, so
    it may go back to `in_review` (docs/architecture.md, the per-case sequence)."""

    DRAFT = "draft"
    SUBMITTED = "submitted"
    ASSIGNED = "assigned"
    IN_REVIEW = "in_review"
    # The specialist asked the patient (or the filing partner) for more information; the
    # review's clock stands until the answer.
    AWAITING_INFORMATION = "awaiting_information"
    REPORT_READY = "report_ready"
    WITHDRAWN = "withdrawn"


class TimelineKind(StrEnum):
    """What a timeline entry records."""

    CREATED = "created"
    SUBMITTED = "submitted"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    REVIEW_COMPLETED = "review_completed"
    INFORMATION_REQUESTED = "information_requested"
    INFORMATION_PROVIDED = "information_provided"
    REVIEW_RESUMED = "review_resumed"
    SECOND_READING = "second_reading"  # a second specialist reads the opinion before release
    SECOND_READING_AGREED = "second_reading_agreed"
    # International review: a translation waits for its translator, then is done (each way).
    TRANSLATION_QUEUED = "translation_queued"
    TRANSLATION_DONE = "translation_done"
    REPORT_READY = "report_ready"
    # The treating physician got their copy of the report (notify sent it; no one named).
    PHYSICIAN_COPY_SENT = "physician_copy_sent"
    FOLLOW_UP_ASKED = "follow_up_asked"
    FOLLOW_UP_ANSWERED = "follow_up_answered"
    WITHDRAWN = "withdrawn"
    ERASURE_REQUESTED = "erasure_requested"
    ERASED = "erased"
    HELD = "held"
    RELEASED = "released"


class DocumentKind(StrEnum):
    """What a medical record is."""

    TEST_RESULT = "test_result"
    IMAGING_REPORT = "imaging_report"
    PRESCRIPTION = "prescription"
    CLINICAL_SUMMARY = "clinical_summary"
    OTHER = "other"


class ContentType(StrEnum):
    """The record formats intake accepts, recognised from the file's own bytes."""

    PDF = "application/pdf"
    JPEG = "image/jpeg"
    PNG = "image/png"
    DICOM = "application/dicom"
    TEXT = "text/plain"


class Strict(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class PatientIn(Strict):
    """The patient's identity and contact."""

    given_name: Name
    family_name: Name
    birth_date: IsoDate = Field(description="Not in the future, not before 1900.")
    email: Email = Field(max_length=254)
    phone: Phone | None = None
    preferred_language: Language = Field(description="fr or en: the language of the report.")


class PhysicianIn(Strict):
    """The treating physician (the review's conflict-of-interest check uses the institution).
    With an email, and the `share_with_physician` consent at submission, the physician receives
    the full report through a secure link (or in their institution's FHIR endpoint)."""

    name: Name | None = None
    institution_code: Code | None = Field(
        None, description="Institution code, e.g. a FINESS number."
    )
    email: Email | None = Field(
        None,
        max_length=254,
        description="Where the full report is sent; needs `share_with_physician` at submission.",
    )
    language: Language | None = Field(
        None, description="fr or en: the physician's language (the patient's if not given)."
    )


class CaseCreate(Strict):
    """A new draft case."""

    patient: PatientIn
    physician: PhysicianIn | None = None
    specialty: Specialty
    urgency: Urgency = Urgency.ROUTINE
    questions: list[Question] = Field(
        min_length=1, max_length=5, description="What the review should answer."
    )
    clinical_summary: Text = Field(
        max_length=20_000,
        description="The situation in the patient's words (line breaks and tabs allowed).",
    )
    partner_reference: Code | None = Field(
        None, description="A partner's own reference for the case."
    )

    @field_validator("questions")
    @classmethod
    def _distinct(cls, value: list[Question]) -> list[Question]:
        return list(dict.fromkeys(value))


class ConsentIn(Strict):
    """The patient's explicit consent: which text, when, and for what."""

    text_version: Code = Field(description="Version of the consent text.")
    accepted_at: IsoDateTime = Field(description="When it was given; not in the future.")
    scopes: list[ConsentScope] = Field(
        min_length=1,
        max_length=4,
        description="Must include `review`; `share_with_partner` lets the referring partner "
        "be told about the case; `share_with_physician` sends the full report to the treating "
        "physician (whose email the draft must give, and only with this scope); "
        "`international_review` accepts a specialist who does not read the patient's language, "
        "through a translator, when none who does is available (without it, never).",
        json_schema_extra={"contains": {"const": ConsentScope.REVIEW.value}},
    )


class SubmitIn(Strict):
    """Submission of a draft case."""

    consent: ConsentIn


class ReasonIn(Strict):
    """Why a coordinator erases a case, or sets or lifts its legal hold."""

    reason: str = Field(min_length=3, max_length=500, description="Kept sealed in the trail.")


class ClaimIn(Strict):
    """A patient claims a case a partner filed for them, with the secret of their first email."""

    secret: str = Field(
        min_length=16,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The one-time claim secret of the link in the first email.",
    )


class TimelineEntry(BaseModel):
    """One step of a case; `id` is the event id that caused it, so a redelivery adds nothing."""

    id: str
    kind: TimelineKind
    status: CaseStatus = Field(description="The case's status once this step was taken.")
    at: datetime


class RequestState(StrEnum):
    """Where a request for more information is: open (to answer), answered, or expired."""

    OPEN = "open"
    ANSWERED = "answered"
    EXPIRED = "expired"


class InformationRequestView(BaseModel):
    """A request for more information from the case's specialist; its question and answer only
    in the clinical content (`/clinical`)."""

    id: str
    state: RequestState
    requested_at: datetime
    expires_at: datetime
    answered_at: datetime | None = None
    closed_at: datetime | None = Field(
        None, description="When the review went on (after the answer, or the expiry)."
    )
    question: str | None = Field(None, description="What the specialist asks (clinical).")
    answer: str | None = Field(None, description="What the patient answered (clinical).")
    documents_added: int = Field(0, description="Records added while the request was open.")


class InformationAnswerIn(BaseModel):
    """The answer to a request for more information: a text (records are added beforehand,
    while the request is open, as to a draft)."""

    model_config = ConfigDict(extra="forbid")

    text: Annotated[Text, Field(max_length=4000)]


class ConsentView(BaseModel):
    """The consent recorded at submission."""

    text_version: str
    accepted_at: datetime
    scopes: list[ConsentScope]
    recorded_at: datetime


class DocumentView(BaseModel):
    """A stored record's metadata."""

    document_id: str = Field(
        description="A keyed digest of the file on its case: the same file twice on a case is "
        "one document, and the same file on two cases has two ids."
    )
    kind: DocumentKind
    content_type: ContentType
    size: int
    sha256: str = Field(description="The SHA-256 of the file, in hex, to check a download.")
    filename: str | None = Field(
        description="The original file name, kept as data only; shown to the readers of the "
        "clinical content."
    )
    uploaded_at: datetime


class CaseSummary(BaseModel):
    """A case in a list."""

    case_id: str
    reference: str
    status: CaseStatus
    specialty: Specialty
    urgency: Urgency
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None = Field(
        None, description="When the case's data was erased (its key destroyed), if it was."
    )


class CaseView(CaseSummary):
    """A case with its timeline; no identity and no clinical text (see `/clinical`)."""

    language: Language
    questions: list[Question]
    partner_id: str | None
    partner_reference: str | None
    submitted_at: datetime | None
    withdrawn_at: datetime | None
    erasure_requested_at: datetime | None = Field(
        None, description="When the patient asked for the case's data to be erased, if they did."
    )
    legal_hold: bool = Field(
        False, description="A legal hold defers the case's erasure while it stands."
    )
    legal_hold_since: datetime | None = Field(
        None, description="When the legal hold that stands was set, if one does."
    )
    consent: ConsentView | None
    documents: list[DocumentView]
    timeline: list[TimelineEntry]
    information_requests: list[InformationRequestView] = Field(
        default_factory=list,
        description="The specialist's requests for more information (their texts: `/clinical`).",
    )


class CasePage(Page[CaseSummary]):
    """One page of cases, newest first; pass `next_cursor` as `cursor` for the next."""


class PatientView(BaseModel):
    """The patient's identity and contact, as entered."""

    given_name: str
    family_name: str
    birth_date: date
    email: str
    phone: str | None
    preferred_language: Language


class PhysicianView(BaseModel):
    """The treating physician."""

    name: str | None
    institution_code: str | None


class ClinicalView(BaseModel):
    """What a reader authorised for the clinical content sees.

    `patient` (identity and contact) is left out for reviewers: they review the case, not the
    person, and get the age instead.
    """

    case_id: str
    reference: str
    specialty: Specialty
    urgency: Urgency
    language: Language
    questions: list[Question]
    clinical_summary: str
    age_years: int
    physician: PhysicianView | None
    patient: PatientView | None
    documents: list[DocumentView]
    information_requests: list[InformationRequestView] = Field(
        default_factory=list, description="The requests for more information, with their texts."
    )
