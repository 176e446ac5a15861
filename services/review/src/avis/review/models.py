"""API schemas and views of the review service (a leaf: the stored documents of store.py
turn themselves into these views).

The opinion is the only clinical text review keeps; the case itself stays with intake, so a case
here is its triage codes (specialty, urgency, language, the treating physician's institution).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from avis.shared.events import Assessment, Language, Specialty, Urgency
from avis.shared.pages import Page
from avis.shared.text import Code, Declares, Text, must_match
from avis.shared.text import Name as NameText

T = TypeVar("T")


def _distinct(values: list[T]) -> list[T]:
    return list(dict.fromkeys(values))


Name = Annotated[NameText, Field(max_length=200)]
# A pragmatic address check, as intake's; deliverability is the notify service's concern.
EMAIL_PATTERN = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"  # noqa: E501
WorkEmail = Annotated[
    str,
    must_match(EMAIL_PATTERN, "an email address"),
    Declares(EMAIL_PATTERN),
    Field(max_length=254),
]
Reason = Annotated[Text, Field(max_length=2000)]
Section = Annotated[Text, Field(max_length=20000)]
ReviewerId = Code
InstitutionCode = Code
Specialties = Annotated[
    list[Specialty], Field(min_length=1, max_length=len(Specialty)), AfterValidator(_distinct)
]
Languages = Annotated[
    list[Language], Field(min_length=1, max_length=len(Language)), AfterValidator(_distinct)
]


def _json_number(value: Any) -> Any:
    # JSON true/false and strings are not numbers, though lax parsing would take them as such.
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON integer")
    return value


Capacity = Annotated[
    int,
    Field(ge=0, le=100, description="Active assignments at most."),
    BeforeValidator(_json_number),
]


class CaseStatus(StrEnum):
    """Where a case stands in review."""

    MATCHING = "matching"  # a matching decision is due (new, or its reviewer declined)
    WAITING = "waiting"  # nobody fits: in the queue
    ASSIGNED = "assigned"  # an assignment is active or answered
    WITHDRAWN = "withdrawn"


class AssignmentStatus(StrEnum):
    """The life of one assignment round."""

    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    COMPLETED = "completed"
    CANCELLED = "cancelled"  # the case was withdrawn


# Assignments that count against a reviewer's capacity.
ACTIVE = (AssignmentStatus.ASSIGNED, AssignmentStatus.ACCEPTED)


class DeclineReason(StrEnum):
    """Why a reviewer declined; the code travels on Kafka, the free text never does."""

    CONFLICT_OF_INTEREST = "conflict_of_interest"
    OUTSIDE_EXPERTISE = "outside_expertise"
    NO_AVAILABILITY = "no_availability"
    OTHER = "other"


# --- reviewers -------------------------------------------------------------------------------


class ReviewerIn(BaseModel):
    """A reviewer as a coordinator adds them to the directory."""

    model_config = ConfigDict(extra="forbid")

    id: ReviewerId = Field(description="Also the `sub` of the reviewer's token.")
    display_name: Name
    specialties: Specialties
    languages: Languages
    institution_code: InstitutionCode | None = Field(
        None, description="Where the reviewer practises; never matched to that institution's cases."
    )
    capacity: Capacity
    active: StrictBool = True
    email: WorkEmail | None = Field(
        None,
        description="The reviewer's work address: they are emailed when work waits for them "
        "(kept sealed, never shown back).",
    )


def left_out() -> Any:
    """The default of a patch field: never validated, so a field left out stays None (and is
    not part of the change) while an explicit null is refused like any other wrong type."""
    return Field(default=None)


class ReviewerPatch(BaseModel):
    """A partial change to a reviewer; fields left out are kept."""

    model_config = ConfigDict(extra="forbid")

    display_name: Name = left_out()
    specialties: Specialties = left_out()
    languages: Languages = left_out()
    institution_code: InstitutionCode | None = Field(None, description="null: no institution.")
    capacity: Capacity = left_out()
    active: StrictBool = left_out()
    email: WorkEmail | None = Field(
        None, description="The work address (kept sealed); null: none, they are told nothing."
    )

    def changes(self) -> dict[str, Any]:
        """The fields this patch sets, as stored."""
        return self.model_dump(mode="json", include=self.model_fields_set)


class Reviewer(BaseModel):
    """A reviewer of the directory with their current load."""

    id: str
    display_name: str
    specialties: list[Specialty]
    languages: list[Language]
    institution_code: str | None
    capacity: int
    active: bool
    load: int = Field(description="Assignments assigned or accepted and not yet answered.")
    created_at: datetime
    updated_at: datetime


class ReviewerPage(Page[Reviewer]):
    """A page of reviewers; pass `next_cursor` as `cursor` for the next one."""


# --- matching rationale ---------------------------------------------------------------------


class Considered(BaseModel):
    """One reviewer the matcher looked at, and why they were left out (null: eligible)."""

    reviewer_id: str
    load: int
    capacity: int
    excluded: str | None


class Rationale(BaseModel):
    """Why this reviewer (or nobody): the candidates and the rule that decided."""

    rule: str
    chosen: str | None
    candidates: list[Considered]
    decided_at: datetime
    decided_by: str = Field(description="`matcher`, or the coordinator who assigned by hand.")


# --- queue ----------------------------------------------------------------------------------


class QueuedCase(BaseModel):
    """A case nobody fits yet."""

    case_id: str
    reference: str
    specialty: Specialty
    urgency: Urgency
    language: Language
    physician_institution: str | None
    submitted_at: datetime
    waiting_since: datetime | None
    declined_by: list[str]
    last_attempt: Rationale | None
    international_review: bool = Field(
        False,
        description="The patient accepted a specialist who does not read their language, "
        "through a translator, when none who does is available.",
    )


class QueuePage(Page[QueuedCase]):
    """A page of the queue, urgent cases first, then oldest first."""


class AssignBody(BaseModel):
    """A coordinator's choice of reviewer for a waiting case."""

    model_config = ConfigDict(extra="forbid")

    reviewer_id: ReviewerId


# --- assignments ----------------------------------------------------------------------------


class Assignment(BaseModel):
    """One assignment round of a case to a reviewer."""

    id: str
    case_id: str
    reference: str
    round: int
    reviewer_id: str
    status: AssignmentStatus
    specialty: Specialty
    urgency: Urgency
    language: Language
    assigned_at: datetime
    due_at: datetime
    overdue: bool
    accepted_at: datetime | None = None
    declined_at: datetime | None = None
    decline_reason_code: DeclineReason | None = None
    decline_reason: str | None = Field(None, description="Free text; coordinators only.")
    completed_at: datetime | None = None
    cancelled_at: datetime | None = None
    opinion_version: int | None = None
    case_url: str = Field(description="Where the reviewer reads the case (intake's API).")
    rationale: Rationale | None = Field(None, description="Coordinators only.")
    paused_since: datetime | None = Field(
        None,
        description="While a request for more information is open: since when the SLA clock "
        "stands (the due date moves by the pause when it resumes).",
    )
    information_requests: list[InformationRequest] = Field(
        default_factory=list, description="The requests for more information, oldest first."
    )
    second_reading: str | None = Field(
        None,
        description="Where the second reading of the opinion is (unmatched, reading, "
        "commented, agreed), if it has one.",
    )
    translations: list[TranslationStep] = Field(
        default_factory=list,
        description="International review: the round's translations (to the specialist "
        "first, then back), where each is; read one at `/v1/translations/{id}`.",
    )


class AssignmentPage(Page[Assignment]):
    """A page of assignments, soonest due first."""


class InformationRequestBody(BaseModel):
    """What the specialist asks the patient (or the filing partner) for: a missing record or a
    precision. Kept sealed under the case's key; never published or logged in clear."""

    model_config = ConfigDict(extra="forbid")

    text: Reason


class RequestState(StrEnum):
    """Where a request for more information is."""

    OPEN = "open"
    ANSWERED = "answered"
    EXPIRED = "expired"


class InformationRequest(BaseModel):
    """A request for more information on an assignment (its question is read in intake, with
    the case)."""

    id: str
    assignment_id: str
    case_id: str
    reviewer_id: str
    state: RequestState
    requested_at: datetime
    expires_at: datetime
    answered_at: datetime | None = None
    expired_at: datetime | None = None
    paused_seconds: float | None = Field(None, description="How long the SLA clock stood.")


class InformationRequestPage(Page[InformationRequest]):
    """A page of requests for more information, soonest to expire first."""


class FollowUpBody(BaseModel):
    """A follow-up question about the issued report, or the specialist's answer to one. Kept
    sealed under the case's key; never published or logged in clear."""

    model_config = ConfigDict(extra="forbid")

    text: Reason


class FollowUpState(StrEnum):
    """Where a follow-up question is."""

    OPEN = "open"
    ANSWERED = "answered"


class FollowUp(BaseModel):
    """A follow-up question after the report, to the specialist who wrote the opinion; its text
    and answer only in a read of the one question (each such read is in the case's trail)."""

    id: str
    case_id: str
    assignment_id: str
    reviewer_id: str
    number: int = Field(ge=1, description="Its rank among the case's follow-up questions.")
    state: FollowUpState
    asked_at: datetime
    due_at: datetime = Field(description="When the specialist's answer is due.")
    overdue: bool
    answered_at: datetime | None = None
    question: str | None = Field(None, description="In the read of this one question only.")
    answer: str | None = Field(None, description="In the read of this one question only.")


class FollowUpPage(Page[FollowUp]):
    """A page of follow-up questions, soonest due first."""


class DeclineBody(BaseModel):
    """Why the reviewer declines: a code (published) and free text (kept in review only)."""

    model_config = ConfigDict(extra="forbid")

    reason_code: DeclineReason
    reason: Reason


class Diagnosis(BaseModel):
    """Whether the diagnosis is confirmed, clarified or revised, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    assessment: Assessment
    explanation: Section


class Opinion(BaseModel):
    """The structured opinion: every section is required and non-empty."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    diagnosis: Diagnosis
    imaging_and_lab_review: Section
    alternative_pathways: Section
    risk_benefit: Section
    further_tests: Section
    summary_for_patient: Section


class OpinionVersion(BaseModel):
    """One recorded version of an assignment's opinion."""

    assignment_id: str
    case_id: str
    reviewer_id: str
    version: int
    completed_at: datetime
    opinion: Opinion


# --- the second reading -----------------------------------------------------------------------


class SecondReadingReason(StrEnum):
    """Why an opinion goes to a second specialist before it is released."""

    COORDINATOR_RULE = "coordinator_rule"  # the case's specialty or urgency is in the rules
    FIRST_READER = "first_reader"  # the first specialist asked for it


class SecondReadingState(StrEnum):
    """Where a second reading is."""

    UNMATCHED = "unmatched"  # nobody fits yet: the opinion waits
    READING = "reading"  # the second reader has a version to read
    COMMENTED = "commented"  # comments went back: the first answers with a new version
    AGREED = "agreed"  # the opinion is released, naming both
    WITHDRAWN = "withdrawn"  # the case was withdrawn before the agreement: closed


Urgencies = Annotated[list[Urgency], Field(max_length=len(Urgency)), AfterValidator(_distinct)]
RuleSpecialties = Annotated[
    list[Specialty], Field(max_length=len(Specialty)), AfterValidator(_distinct)
]


class SecondReadingRulesBody(BaseModel):
    """The specialties and urgencies whose opinions a second specialist reads before release
    (coordinators; empty lists: only when the first specialist asks)."""

    model_config = ConfigDict(extra="forbid")

    specialties: RuleSpecialties = Field(default_factory=list)
    urgencies: Urgencies = Field(default_factory=list)


class SecondReadingRules(SecondReadingRulesBody):
    """The rules in force, and who set them last."""

    model_config = ConfigDict(extra="ignore")

    updated_at: datetime | None = None
    updated_by: str | None = None


class SecondReadingBody(BaseModel):
    """What the second reader returns: comments the first specialist must answer."""

    model_config = ConfigDict(extra="forbid")

    text: Section


class SecondReadingComment(BaseModel):
    """Comments of the second reader on a version of the opinion (their text: shown to the
    two specialists and, with a stated reason, to coordinators)."""

    number: int
    version: int = Field(description="The opinion version commented on.")
    commented_at: datetime
    text: str | None = Field(None, description="Absent in lists; null once the case is erased.")
    answered_by_version: int | None = Field(
        None, description="The version of the opinion that answered them."
    )


class SecondReading(BaseModel):
    """The second reading of an assignment's opinion."""

    assignment_id: str
    case_id: str
    reference: str
    specialty: Specialty
    urgency: Urgency
    first_reader_id: str
    second_reader_id: str | None
    reason: SecondReadingReason
    state: SecondReadingState
    version: int = Field(description="The opinion version under reading (or agreed with).")
    requested_at: datetime
    agreed_at: datetime | None = None
    comments: list[SecondReadingComment] = Field(default_factory=list)
    rationale: Rationale | None = Field(None, description="Coordinators only.")
    opinion: Opinion | None = Field(None, description="The version to read; absent in lists.")


class SecondReadingPage(Page[SecondReading]):
    """A page of second readings still open, by assignment id."""


# --- international review: translators and translations --------------------------------------


class TranslatorIn(BaseModel):
    """A translator as a coordinator puts them in the directory (their id is the `sub` of
    their token)."""

    model_config = ConfigDict(extra="forbid")

    display_name: Name
    languages: Languages = Field(
        description="The languages they translate between, every pair of them both ways."
    )
    capacity: Capacity
    active: StrictBool = True
    email: WorkEmail | None = Field(
        None, description="Their work address: told when a translation waits (kept sealed)."
    )


class Translator(BaseModel):
    """A translator of the directory, with their load (translations chosen for them or taken,
    not done yet)."""

    id: str
    display_name: str
    languages: list[Language]
    capacity: int
    active: bool
    load: int


class TranslationWay(StrEnum):
    """Which way a translation goes: the case's summary and questions to the specialist's
    language before they get the case, or the opinion back to the patient's before the report."""

    TO_SPECIALIST = "to_specialist"
    TO_PATIENT = "to_patient"


class TranslationState(StrEnum):
    """Where a translation is: waiting in the translators' queue, taken by one, done, or
    closed with its round (the specialist declined it, or the case was withdrawn) before it was
    done."""

    QUEUED = "queued"
    TAKEN = "taken"
    DONE = "done"
    CLOSED = "closed"


class TranslationTexts(BaseModel):
    """A translation's text: the case's clinical summary (to the specialist: its questions are
    codes of a fixed list, worded in every language already), or the opinion (to the patient)."""

    summary: str | None = None
    opinion: Opinion | None = None


class TranslationBody(BaseModel):
    """What the translator writes: the summary (a translation to the specialist) or the
    opinion (a translation to the patient), in the target language."""

    model_config = ConfigDict(extra="forbid")

    summary: Section | None = None
    opinion: Opinion | None = None


class TranslationStep(BaseModel):
    """A translation of an international review as its round shows it (never its texts)."""

    id: str
    way: TranslationWay
    state: TranslationState
    from_language: Language
    to_language: Language


class Translation(BaseModel):
    """A translation of an international review, its texts only for whom may read them."""

    id: str
    assignment_id: str
    case_id: str
    reference: str
    way: TranslationWay
    state: TranslationState
    from_language: Language
    to_language: Language
    translator_id: str | None
    translator_display_name: str | None = Field(
        None, description="Who translates it, as the translators' directory names them."
    )
    queued_at: datetime
    due_at: datetime = Field(description="Its own due date (`translation_due_days`).")
    taken_at: datetime | None = None
    done_at: datetime | None = None
    source: TranslationTexts | None = Field(
        None, description="The text to translate (one translation read by its translator)."
    )
    translated: TranslationTexts | None = Field(None, description="The translation, once done.")
    overdue: bool = Field(
        False, description="Past its own due date and not done (nor closed) when read."
    )


class TranslationPage(Page[Translation]):
    """A page of open translations, by id (never their texts)."""


class TranslatorPage(Page[Translator]):
    """A page of the translators' directory, by id; pass `next_cursor` as `cursor`."""
