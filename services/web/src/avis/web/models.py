"""What web reads from the services' APIs and keeps for a person. A leaf: nothing of the service
is imported here.

The views hold only the fields the pages show and ignore the rest, so a field a service adds
never breaks a page; they are web's reading of intake's and reports' documented responses, not
copies of those services' models (web depends on their HTTP API only).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from avis.shared.events import Language, Question, Specialty, Urgency
from avis.shared.security import Role

# The consent text's version: the catalogue's `consent.text` is this version's wording.
CONSENT_VERSION = "consent-2026-01"
T = TypeVar("T")


class Reading(BaseModel):
    """A service's response, read leniently: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")


class DocumentKind(StrEnum):
    """What a medical record is (intake's `kind` form field)."""

    TEST_RESULT = "test_result"
    IMAGING_REPORT = "imaging_report"
    PRESCRIPTION = "prescription"
    CLINICAL_SUMMARY = "clinical_summary"
    OTHER = "other"


class Identity(BaseModel):
    """A person one may sign in as in development (the OpenID provider replaces these)."""

    model_config = ConfigDict(frozen=True)

    sub: str
    role: Role
    partner_id: str | None = None


DEVELOPMENT_IDENTITIES: tuple[Identity, ...] = (
    Identity(sub="patient-1", role="patient"),
    Identity(sub="patient-2", role="patient"),
    # Reviewers of review's development directory (AVIS_REVIEW_SEED_REVIEWERS).
    Identity(sub="rev-cardio-1", role="reviewer"),
    Identity(sub="rev-cardio-2", role="reviewer"),
    Identity(sub="reviewer-1", role="reviewer"),  # a reviewer with no case of the seed
    Identity(sub="coordinator-1", role="coordinator"),
    Identity(sub="translator-1", role="translator"),  # review's seeded translator (fr, en)
    Identity(sub="partner-1", role="partner", partner_id="partner-1"),
)


class Draft(BaseModel):
    """A request being written, step by step, kept in the person's session until it is filed."""

    key: str = Field(description="The Idempotency-Key of its creation: filing twice files once.")
    specialty: Specialty | None = None
    urgency: Urgency = Urgency.ROUTINE
    questions: list[Question] = Field(default_factory=list)
    clinical_summary: str = ""
    given_name: str = ""
    family_name: str = ""
    birth_date: date | None = None
    email: str = ""
    preferred_language: Language | None = None
    physician_name: str = ""
    institution_code: str = ""
    physician_email: str = ""


class TimelineEntry(Reading):
    """One step of a case."""

    kind: str
    status: str
    at: datetime


class DocumentView(Reading):
    """A record's metadata."""

    document_id: str
    kind: str
    content_type: str
    size: int
    filename: str | None = None
    uploaded_at: datetime


class ConsentView(Reading):
    """The consent recorded at submission."""

    text_version: str
    accepted_at: datetime


class CaseSummary(Reading):
    """A case in the person's list."""

    case_id: str
    reference: str
    status: str
    specialty: str
    urgency: str
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None = None


class CaseView(CaseSummary):
    """A case with its records and timeline."""

    questions: list[str] = Field(default_factory=list)
    submitted_at: datetime | None = None
    withdrawn_at: datetime | None = None
    erasure_requested_at: datetime | None = None
    erased_at: datetime | None = None
    legal_hold: bool = False
    legal_hold_since: datetime | None = None
    consent: ConsentView | None = None
    documents: list[DocumentView] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)


class CasePage(Reading):
    """One page of the person's cases."""

    items: list[CaseSummary]
    next_cursor: str | None = None


class ReportSection(Reading):
    """One section of the report."""

    heading: str
    lead: str | None = None
    text: str


class Titled(Reading):
    """A heading and its text."""

    heading: str
    text: str


class QuestionLine(Reading):
    """A question and where the report answers it."""

    text: str
    answered_in_text: str


class ReviewerBlock(Reading):
    """Who wrote the opinion."""

    heading: str
    name: str
    specialty_text: str


class AddendumSection(Reading):
    """A follow-up question after the report and the specialist's answer to it."""

    heading: str
    question_label: str
    question: str
    answer_label: str
    answer: str
    signature: str


class Report(Reading):
    """The report, as the reports service composed it in the patient's language."""

    version: int
    language: str
    title: str
    subtitle: str
    correction_note: str | None = None
    issued_at: datetime
    questions: list[QuestionLine] = Field(default_factory=list)
    sections: list[ReportSection] = Field(default_factory=list)
    reviewer: ReviewerBlock
    disclaimer: Titled
    addenda: list[AddendumSection] = Field(default_factory=list)


# --- coordinator board and partner console ------------------------------------------------


class Listing(Reading, Generic[T]):
    """One page of a service's list."""

    items: list[T]
    next_cursor: str | None = None


class Considered(Reading):
    """A reviewer the matcher looked at, and why they were left out (None: eligible)."""

    reviewer_id: str
    load: int
    capacity: int
    excluded: str | None = None


class Rationale(Reading):
    """Why the matcher chose a reviewer (or nobody)."""

    rule: str
    chosen: str | None = None
    candidates: list[Considered] = Field(default_factory=list)
    decided_at: datetime
    decided_by: str


# --- the specialist's workspace: review's assignments and opinion, intake's clinical view -----

OPINION_SECTIONS = (
    "imaging_and_lab_review",
    "alternative_pathways",
    "risk_benefit",
    "further_tests",
    "summary_for_patient",
)
ASSESSMENTS = ("confirmed", "clarified", "revised")
DECLINE_REASONS = ("conflict_of_interest", "outside_expertise", "no_availability", "other")


class AssignmentView(Reading):
    """One assignment round of a case as review shows it (to coordinators and to its reviewer)."""

    id: str
    case_id: str
    reference: str
    round: int
    reviewer_id: str
    status: str
    specialty: str
    urgency: str
    language: str
    assigned_at: datetime
    due_at: datetime
    overdue: bool
    decline_reason_code: str | None = None
    decline_reason: str | None = None
    rationale: Rationale | None = None
    accepted_at: datetime | None = None
    completed_at: datetime | None = None
    opinion_version: int | None = None
    second_reading: str | None = None
    information_requests: list[RoundRequest] = Field(default_factory=list)
    translations: list[TranslationStep] = Field(default_factory=list)


class RoundRequest(Reading):
    """A request for more information of a round as review lists it: when and where it is,
    never its question (read with the case's clinical content)."""

    id: str
    state: str
    requested_at: datetime
    expires_at: datetime
    answered_at: datetime | None = None
    expired_at: datetime | None = None


class TranslationStep(Reading):
    """A round's translation (international review) as its assignment shows it: no text."""

    id: str
    way: str
    state: str
    from_language: str
    to_language: str


class QueuedCase(Reading):
    """A case nobody fits yet, with the matcher's last attempt."""

    case_id: str
    reference: str
    specialty: str
    urgency: str
    language: str
    physician_institution: str | None = None
    submitted_at: datetime
    waiting_since: datetime | None = None
    declined_by: list[str] = Field(default_factory=list)
    last_attempt: Rationale | None = None
    # The patient accepted a specialist who does not read their language (through a translator).
    international_review: bool = False


class ReviewerView(Reading):
    """A reviewer of the directory with their load."""

    id: str
    display_name: str
    specialties: list[str]
    languages: list[str]
    institution_code: str | None = None
    capacity: int
    active: bool
    load: int


class TranslatorView(Reading):
    """A translator of the directory with their load (review's `Translator`)."""

    id: str
    display_name: str
    languages: list[str]
    capacity: int
    active: bool
    load: int


class AccessEntry(Reading):
    """One read or write of a case's health data."""

    seq: int
    kept_by: str = "intake"
    at: datetime
    role: str
    reader: str
    you: bool = False
    action: str
    outcome: str
    status: int
    purpose: str
    reason: str | None = None


class ClinicalRead(Reading):
    """The clinical content a coordinator read, giving a reason."""

    reference: str
    clinical_summary: str
    age_years: int
    questions: list[str] = Field(default_factory=list)


class SubscriptionView(Reading):
    """A partner's webhook endpoint (never its secret)."""

    id: str
    partner_id: str
    url: str
    event_types: list[str]
    description: str = ""
    enabled: bool
    disabled_reason: str | None = None
    consecutive_failures: int = 0
    created_at: datetime


class SubscriptionMade(SubscriptionView):
    """A new subscription and its signing secret, shown this once."""

    secret: str


class FhirEndpointView(Reading):
    """The state of an institution's FHIR endpoint, as notify shows it to coordinators: its
    code, whether it takes posts, its failed posts in a row, why it was disabled and how many
    posts wait for it (never its URL, never a person)."""

    institution: str
    enabled: bool
    consecutive_failures: int = 0
    disabled_reason: str | None = None
    disabled_at: datetime | None = None
    waiting: int = 0


class DeliveryAttempt(Reading):
    """One attempt to deliver a webhook."""

    at: datetime
    outcome: str
    code: int | None = None
    latency_ms: int
    reason: str


class DeliveryView(Reading):
    """One event delivered to one subscription, and every attempt."""

    id: str
    subscription_id: str
    case_id: str
    event_type: str
    webhook_id: str
    status: str
    created_at: datetime
    delivered_at: datetime | None = None
    next_attempt_at: datetime | None = None
    replays: int = 0
    attempts: list[DeliveryAttempt] = Field(default_factory=list)


class AssignmentList(Reading):
    """One page of the reviewer's assignments, soonest due first."""

    items: list[AssignmentView]
    next_cursor: str | None = None


class PhysicianView(Reading):
    """The treating physician."""

    name: str | None = None
    institution_code: str | None = None


class InformationRequestView(Reading):
    """A request for more information from the case's specialist, as intake's clinical content
    shows it."""

    id: str
    state: str
    requested_at: datetime
    expires_at: datetime
    question: str | None = None


class CaseRequests(Reading):
    """The specialist's requests for more information, read from a case's clinical content."""

    information_requests: list[InformationRequestView] = Field(default_factory=list)


class ClinicalView(Reading):
    """What the assigned reviewer reads of a case: no identity of the patient, an age instead."""

    case_id: str
    reference: str
    specialty: str
    urgency: str
    questions: list[str] = Field(default_factory=list)
    clinical_summary: str
    age_years: int
    physician: PhysicianView | None = None
    documents: list[DocumentView] = Field(default_factory=list)


class OpinionForm(BaseModel):
    """The structured opinion as the form holds it: any field may still be empty (a draft)."""

    assessment: str = ""
    explanation: str = ""
    imaging_and_lab_review: str = ""
    alternative_pathways: str = ""
    risk_benefit: str = ""
    further_tests: str = ""
    summary_for_patient: str = ""


class DiagnosisView(Reading):
    """The opinion's first section: the assessment and why."""

    assessment: str
    explanation: str


class OpinionView(Reading):
    """The structured opinion as review recorded it."""

    diagnosis: DiagnosisView
    imaging_and_lab_review: str
    alternative_pathways: str
    risk_benefit: str
    further_tests: str
    summary_for_patient: str


class OpinionRecord(Reading):
    """A recorded version of the opinion (review's `OpinionVersion`)."""

    version: int
    completed_at: datetime
    opinion: OpinionView

    def form(self) -> OpinionForm:
        """This version in the form's shape (the start of a correction)."""
        opinion = self.opinion
        return OpinionForm(
            assessment=opinion.diagnosis.assessment,
            explanation=opinion.diagnosis.explanation,
            **{name: getattr(opinion, name) for name in OPINION_SECTIONS},
        )


class SecondReadingCommentView(Reading):
    """Comments of a second reader on a version of the opinion."""

    number: int
    version: int
    commented_at: datetime
    text: str | None = None
    answered_by_version: int | None = None


class SecondReadingView(Reading):
    """The second reading of an opinion (review's `SecondReading`)."""

    assignment_id: str
    case_id: str
    reference: str
    specialty: str
    urgency: str
    first_reader_id: str
    second_reader_id: str | None = None
    reason: str
    state: str
    version: int
    requested_at: datetime
    agreed_at: datetime | None = None
    comments: list[SecondReadingCommentView] = []
    opinion: OpinionView | None = None


class SecondReadingList(Reading):
    """A page of open second readings."""

    items: list[SecondReadingView]


# --- the translator's workspace: review's translations ---------------------------------------


class TranslationTextsView(Reading):
    """A translation's text: the clinical summary, or the opinion."""

    summary: str | None = None
    opinion: OpinionView | None = None


class TranslationView(Reading):
    """A translation of an international review (review's `Translation`)."""

    id: str
    assignment_id: str
    case_id: str
    reference: str
    way: str
    state: str
    from_language: str
    to_language: str
    translator_id: str | None = None
    translator_display_name: str | None = None
    queued_at: datetime
    due_at: datetime
    done_at: datetime | None = None
    source: TranslationTextsView | None = None
    translated: TranslationTextsView | None = None
    overdue: bool = False  # past its own due date, not done (as review reads it)


class TranslationList(Reading):
    """A page of open translations."""

    items: list[TranslationView]
    next_cursor: str | None = None
