"""Event payloads: the single source of truth for what travels on Kafka (DESIGN.md section 3).

Payloads carry pseudonymous ids, codes, timestamps and links; whatever is sensitive travels
sealed (`avis.shared.sealing.Sealed`). Readers ignore unknown fields; a change that breaks an
existing reader gets a new `.vN` type. JSON Schema and AsyncAPI are generated from here.
"""

import argparse
import json
import pathlib
from collections.abc import Iterable
from datetime import date
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from avis.shared.sealing import Sealed
from avis.shared.topics import (
    AUDIT_ANCHORED,
    CASE_SUBMITTED,
    REPORT_READY,
    REVIEW_ASSIGNED,
    REVIEW_COMPLETED,
    TOPICS,
    dlq,
)


class Specialty(StrEnum):
    """The specialties a case can be filed under."""

    CARDIOLOGY = "cardiology"
    DERMATOLOGY = "dermatology"
    ENDOCRINOLOGY = "endocrinology"
    GASTROENTEROLOGY = "gastroenterology"
    HAEMATOLOGY = "haematology"
    NEPHROLOGY = "nephrology"
    NEUROLOGY = "neurology"
    ONCOLOGY = "oncology"
    ORTHOPAEDICS = "orthopaedics"
    PAEDIATRICS = "paediatrics"
    PULMONOLOGY = "pulmonology"
    RARE_DISEASES = "rare_diseases"
    RHEUMATOLOGY = "rheumatology"
    UROLOGY = "urology"


class Urgency(StrEnum):
    """How fast the review is due."""

    ROUTINE = "routine"
    URGENT = "urgent"


class Language(StrEnum):
    """Languages a patient reads and a report is composed in."""

    FR = "fr"
    EN = "en"


class Question(StrEnum):
    """What the patient wants the review to answer."""

    DIAGNOSIS_CLARIFICATION = "diagnosis_clarification"
    IMAGING_AND_LAB_REVIEW = "imaging_and_lab_review"
    TREATMENT_ALTERNATIVES = "treatment_alternatives"
    RISK_BENEFIT = "risk_benefit"
    FURTHER_TESTS = "further_tests"


class ConsentScope(StrEnum):
    """What the patient consents to: the review itself, sharing with the referring partner,
    sending the full report to their treating physician, and a review by a specialist who does
    not read their language, through a translator (only when none who does is available)."""

    REVIEW = "review"
    SHARE_WITH_PARTNER = "share_with_partner"
    SHARE_WITH_PHYSICIAN = "share_with_physician"
    INTERNATIONAL_REVIEW = "international_review"


class SubmittedScope(StrEnum):
    """The consent scopes `avis.case.submitted.v1` names: those its released readers know. The
    consent to send the treating physician the report is told by the sealed `physician` field
    instead, since an added value would make those readers refuse the event."""

    REVIEW = "review"
    SHARE_WITH_PARTNER = "share_with_partner"


class Assessment(StrEnum):
    """What the reviewer concludes about the diagnosis."""

    CONFIRMED = "confirmed"
    CLARIFIED = "clarified"
    REVISED = "revised"


# --- sealed contents: what a Sealed field holds once opened --------------------------------


class SealedContent(BaseModel):
    """Base of what travels sealed: frozen, and tolerant of fields added later."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class PatientContact(SealedContent):
    """The patient's identity and contact, sealed in `avis.case.submitted.v1`."""

    given_name: str
    family_name: str
    email: str
    phone: str | None = None
    birth_date: date
    preferred_language: Language


class ClaimSecret(SealedContent):
    """The one-time secret a patient claims a partner-filed case with, sealed in
    `avis.case.submitted.v1`; intake keeps only a keyed digest of it."""

    secret: str


class PhysicianContact(SealedContent):
    """The treating physician the patient asked to receive the full report, sealed in
    `avis.case.submitted.v1` (only with `share_with_physician`)."""

    name: str | None = None
    email: str
    language: Language = Field(description="The language the physician is written to in.")
    institution_code: str | None = None
    link_secret: str | None = Field(
        None,
        description="The secret of the link that opens the report for this physician only "
        "(reports keeps a keyed digest of it, notify puts it in the physician's email).",
    )


class ProfessionalContact(SealedContent):
    """A professional told that work waits for them (a specialist, a second reader; a
    translator later, the same way): their work address and languages, sealed in the review
    events that need them, never in clear."""

    email: str
    languages: list[Language] = Field(
        description="The person's languages in their order; they are written to in the first "
        "one the sender has words for."
    )


class OpinionDiagnosis(SealedContent):
    """Whether the diagnosis is confirmed, clarified or revised, and why."""

    assessment: Assessment
    explanation: str


class CompletedOpinion(SealedContent):
    """The structured opinion and its author's display data, sealed in `review-completed`."""

    diagnosis: OpinionDiagnosis
    imaging_and_lab_review: str
    alternative_pathways: str
    risk_benefit: str
    further_tests: str
    summary_for_patient: str
    version: int = Field(ge=1)
    reviewer_display_name: str
    reviewer_specialty: Specialty | None = None
    second_reader_display_name: str | None = Field(
        None, description="The second specialist who read the opinion and agreed, if one did."
    )
    second_reader_specialty: Specialty | None = None
    translator_display_name: str | None = Field(
        None,
        description="International review: the translator who translated the opinion into the "
        "patient's language (the sections above are the translation).",
    )
    translated_from: Language | None = Field(
        None, description="The language the specialist wrote the opinion in, when translated."
    )


class CaseSummary(SealedContent):
    """The patient's clinical summary, sealed in `avis.case.submitted.v1` only when they
    accepted an international review: a translator translates it for the specialist."""

    text: str


class InformationQuestion(SealedContent):
    """What a specialist asks the patient (or the filing partner) for: a missing record or a
    precision, sealed in `avis.review.information-requested.v1`."""

    text: str


class SecondReadingComments(SealedContent):
    """What a second reader returns to the first specialist about their opinion, sealed in
    `avis.review.second-reading-commented.v1`."""

    text: str


class FollowUpQuestion(SealedContent):
    """A follow-up question the patient (or the filing partner) asks about an issued report,
    sealed in `avis.review.follow-up-asked.v1`."""

    text: str


class FollowUpAnswer(SealedContent):
    """The specialist's answer to a follow-up question, with the question it answers, sealed in
    `avis.review.follow-up-answered.v1`: the report's addendum is made of it."""

    question: str
    answer: str
    reviewer_display_name: str


def sealed(content: type[SealedContent], description: str, *, optional: bool = False) -> Any:
    """A `Sealed` field whose documentation carries the schema of what it holds once opened
    (`optional`: absent by default)."""
    return Field(
        None if optional else ...,
        description=f"{description} Sealed (AES-256-GCM, the event id as associated data); "
        f"opened, it is a {content.__name__}.",
        json_schema_extra={"x-sealed-content": content.__name__},
    )


SEALED_CONTENTS: tuple[type[SealedContent], ...] = (
    PatientContact,
    ClaimSecret,
    CompletedOpinion,
    PhysicianContact,
    ProfessionalContact,
    InformationQuestion,
    SecondReadingComments,
    FollowUpQuestion,
    FollowUpAnswer,
    CaseSummary,
)


class Payload(BaseModel):
    """Base of every event payload: frozen, and tolerant of fields added later."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    case_id: str = Field(description="Pseudonymous case id; also the Kafka key and ce_subject.")


class CaseSubmitted(Payload):
    """A patient or partner submitted a case for independent review."""

    reference: str = Field(description="Human reference, e.g. AV-2026-000123.")
    specialty: Specialty
    urgency: Urgency
    language: Language
    questions: list[Question]
    physician_institution: str | None = Field(
        None, description="Institution code of the treating physician (conflict of interest)."
    )
    partner_id: str | None = Field(
        None, description="The referring partner; present only with `share_with_partner`."
    )
    partner_reference: str | None = Field(
        None, description="The partner's own reference; present only with `share_with_partner`."
    )
    patient_id: str | None = Field(
        None, description="Pseudonymous subject of the patient who filed the case, if one did."
    )
    consent_scopes: list[SubmittedScope] = Field(
        default_factory=list,
        description="What the patient consented to at submission (`physician` present: also "
        "to send the treating physician the report).",
    )
    international_review: bool = Field(
        False,
        description="The patient accepted a review by a specialist who does not read their "
        "language, through a translator, when none who does is available (default no). A field "
        "of its own, not a consent scope: released readers of the event know no such scope.",
    )
    document_count: int
    submitted_at: AwareDatetime
    case_url: str = Field(description="Where an authorised reader fetches the case from intake.")
    contact: Sealed = sealed(PatientContact, "The patient's names, birth date, email, phone.")
    claim: Sealed | None = sealed(
        ClaimSecret,
        "A case a partner filed: the one-time secret its patient claims it with.",
        optional=True,
    )
    physician: Sealed | None = sealed(
        PhysicianContact,
        "The treating physician to send the full report to; present only with "
        "`share_with_physician`.",
        optional=True,
    )
    summary: Sealed | None = sealed(
        CaseSummary,
        "The clinical summary, for the translator of an international review; present only "
        "with `international_review`.",
        optional=True,
    )
    key_ref: str | None = Field(
        None,
        description="The case's data key in the key service: a reference, never the key. "
        "Every value of the case is sealed under it (key id `case.<key_ref>`); destroying it "
        "erases the case everywhere.",
    )


class CaseWithdrawn(Payload):
    """The patient or partner withdrew the case before its report."""

    withdrawn_at: AwareDatetime


class CaseErased(Payload):
    """The case's data key was destroyed: nothing sealed for it opens any more, anywhere. Each
    service drops its copy of the key and what it derived; the case's ids, codes and times
    stay."""

    key_ref: str | None = Field(None, description="The destroyed key's reference.")
    erased_at: AwareDatetime
    requested_by: Literal["patient", "coordinator"] = Field(
        description="Who asked for the erasure."
    )
    notice: Sealed | None = sealed(
        PatientContact,
        "Where to tell the patient that the erasure is done, under a key of its own (key id "
        "`case.<ref>`) that notify destroys once that email is sent: the address is then gone "
        "everywhere, this event included.",
        optional=True,
    )


class CaseKeyed(Payload):
    """A case filed before per-case keys was given its own data key (intake's migration,
    `avis-case-keys`): each service records the reference and seals its copies of the case's
    values under that key, so that erasing the case reaches them too."""

    key_ref: str = Field(
        description="The case's data key in the key service: a reference, never the key "
        "(key id `case.<key_ref>`)."
    )
    keyed_at: AwareDatetime


class CaseClaimed(Payload):
    """The patient of a partner-filed case claimed it through the link of their first email."""

    patient_id: str = Field(description="Pseudonymous subject of the patient who claimed it.")
    claimed_at: AwareDatetime


class Sequenced(Payload):
    """Base of the events that drive a case's status: each carries the case's sequence number."""

    seq: int = Field(
        0,
        ge=0,
        description="The position of this fact in the case's lifecycle, stamped by the "
        "service that owns that part of it (review for its rounds, reports with the sequence of "
        "the opinion a report is made from); a status consumer orders a case's status by it "
        "and by the status's rank between facts of one step, so a newer fact may move a case "
        "back (to review) and an older one changes nothing. 0: stamped before sequences.",
    )


class ReviewAssigned(Sequenced):
    """A specialist was assigned to review the case; the SLA clock runs."""

    assignment_id: str
    reviewer_id: str
    specialty: Specialty
    assigned_at: AwareDatetime
    due_at: AwareDatetime
    international: bool = Field(
        False,
        description="The specialist does not read the patient's language: an international "
        "review the patient accepted, through a translator both ways.",
    )


class ReviewAccepted(Sequenced):
    """The assigned specialist accepted the review."""

    assignment_id: str
    reviewer_id: str
    accepted_at: AwareDatetime


class ReviewDeclined(Sequenced):
    """The assigned specialist declined; another will be assigned."""

    assignment_id: str
    reviewer_id: str
    declined_at: AwareDatetime
    reason_code: str


class ReviewCompleted(Sequenced):
    """A version of the structured opinion was written (a correction is a higher version)."""

    assignment_id: str
    reviewer_id: str
    specialty: Specialty
    version: int = Field(ge=1)
    completed_at: AwareDatetime
    opinion: Sealed = sealed(CompletedOpinion, "The structured opinion and who wrote it.")
    report_seq: int = Field(
        0,
        ge=0,
        description="The sequence number the report version of this opinion goes out with: "
        "the opinion's own (`seq`) when no follow-up question of the case is open, else one "
        "below the earliest open one's, so that a correction issued meanwhile keeps the case "
        "in review until the question is answered. 0: the opinion's own.",
    )


class InformationRequested(Sequenced):
    """The specialist of an accepted review asked the patient (or the filing partner) for a
    missing record or a precision: the review's SLA clock stands until the answer arrives, or
    the request expires."""

    assignment_id: str
    reviewer_id: str
    request_id: str = Field(description="The request's id, which the answer names.")
    requested_at: AwareDatetime
    expires_at: AwareDatetime = Field(description="When an unanswered request expires.")
    question: Sealed = sealed(InformationQuestion, "What the specialist asks.")


class InformationProvided(Payload):
    """The patient (or the filing partner) answered a request for more information; the
    answer stays in intake, where the specialist reads it with the case."""

    request_id: str
    provided_at: AwareDatetime
    document_count: int = Field(0, ge=0, description="Records added with the answer.")


class ReviewResumed(Sequenced):
    """The review goes on after a request for more information was answered or expired: the
    assignment's due date moved by the time its clock stood."""

    assignment_id: str
    reviewer_id: str
    request_id: str
    resumed_at: AwareDatetime
    due_at: AwareDatetime = Field(description="The assignment's due date, moved by the pause.")
    paused_seconds: float = Field(ge=0, description="How long the SLA clock stood.")
    outcome: Literal["answered", "expired"]


class SecondReadingRequested(Sequenced):
    """A version of the opinion goes to a second specialist before it is released: a
    coordinator's rule for the case's specialty or urgency, or the first specialist's request.
    The opinion stays in review until the second reader agrees (`second_reader_id` absent:
    nobody fits yet)."""

    assignment_id: str
    reviewer_id: str = Field(description="The first specialist, who wrote the opinion.")
    second_reader_id: str | None = None
    version: int = Field(ge=1, description="The opinion version to read.")
    requested_at: AwareDatetime
    reason: Literal["coordinator_rule", "first_reader"]
    recipient: Sealed | None = sealed(
        ProfessionalContact,
        "The second reader, told that a reading waits (absent: nobody fits, or no address).",
        optional=True,
    )


class SecondReadingCommented(Sequenced):
    """The second reader returned comments that the first specialist must answer with a new
    version of the opinion."""

    assignment_id: str
    reviewer_id: str = Field(description="The first specialist, who answers.")
    second_reader_id: str
    version: int = Field(ge=1, description="The opinion version commented on.")
    commented_at: AwareDatetime
    comments: Sealed = sealed(SecondReadingComments, "What the second reader returns.")
    recipient: Sealed | None = sealed(
        ProfessionalContact,
        "The first specialist, told that comments came back (absent: no address).",
        optional=True,
    )


class SecondReadingAgreed(Sequenced):
    """The second reader agreed with the opinion: it is released (`avis.review.completed.v1`
    follows, naming both specialists)."""

    assignment_id: str
    reviewer_id: str = Field(description="The first specialist, who wrote the opinion.")
    second_reader_id: str
    version: int = Field(ge=1, description="The opinion version agreed with.")
    agreed_at: AwareDatetime


class TranslationQueued(Sequenced):
    """International review: a translation waits for a translator, its own step with its own
    due date. `to_specialist`: the case's summary and questions into the specialist's language,
    before they open the case; `to_patient`: the opinion back into the patient's, before it is
    released (`avis.review.completed.v1` follows the translation). The texts are never here."""

    assignment_id: str
    reviewer_id: str = Field(description="The specialist of the international review.")
    translation_id: str
    way: Literal["to_specialist", "to_patient"]
    from_language: Language
    to_language: Language
    translator_id: str | None = Field(
        None, description="The translator it waits for (absent: the first of the pair to take it)."
    )
    queued_at: AwareDatetime
    due_at: AwareDatetime = Field(description="When the translation is due (its own due date).")
    recipient: Sealed | None = sealed(
        ProfessionalContact,
        "The translator, told that a translation waits (absent: none chosen, or no address).",
        optional=True,
    )


class TranslationDone(Sequenced):
    """International review: a translator submitted a translation (`to_patient`: the opinion
    is released, translated, by the `avis.review.completed.v1` written with this event)."""

    assignment_id: str
    reviewer_id: str = Field(description="The specialist of the international review.")
    translation_id: str
    way: Literal["to_specialist", "to_patient"]
    from_language: Language
    to_language: Language
    translator_id: str
    done_at: AwareDatetime


class FollowUpAsked(Sequenced):
    """The patient (or the filing partner) asked a follow-up question about the issued report:
    the case goes back to review, to the specialist who wrote the opinion, with a due date of
    the question's own."""

    assignment_id: str
    reviewer_id: str
    follow_up_id: str = Field(description="The question's id, which the answer names.")
    number: int = Field(ge=1, description="The question's rank among the case's follow-ups.")
    asked_at: AwareDatetime
    due_at: AwareDatetime = Field(description="When the specialist's answer is due.")
    question: Sealed = sealed(FollowUpQuestion, "What the patient asks.")
    recipient: Sealed | None = sealed(
        ProfessionalContact,
        "The specialist, told that a follow-up question waits (absent: no address).",
        optional=True,
    )


class FollowUpAnswered(Sequenced):
    """The specialist answered a follow-up question: reports issues a new report version with
    the answer as an addendum (the earlier versions stay served)."""

    assignment_id: str
    reviewer_id: str
    follow_up_id: str
    number: int = Field(ge=1)
    answered_at: AwareDatetime
    answer: Sealed = sealed(FollowUpAnswer, "The question, the answer and who answered.")
    report_seq: int = Field(
        0,
        ge=0,
        description="The sequence number the report version with this answer goes out with: "
        "the answer's own (`seq`) when no other question of the case is open, else one below "
        "the earliest open one's, so that the case stays in review until the last is "
        "answered. 0: the answer's own.",
    )


class ReportReady(Sequenced):
    """The feedback report of a case is ready to be read."""

    report_id: str
    version: int = Field(ge=1)
    languages: list[Language]
    formats: list[str]
    ready_at: AwareDatetime
    report_url: str


class PhysicianCopySent(Payload):
    """The treating physician got the case's report: notify sent their copy, an email with the
    link that opens it for them, or its FHIR document posted to their institution's endpoint.
    It names no one (the physician stays sealed in `avis.case.submitted.v1`); a copy of each
    report version is one event. It changes no status (no `seq`): a timeline entry."""

    report_version: int = Field(ge=1, description="The report version the copy is of.")
    channel: Literal["email", "fhir"] = Field(
        description="How it went: `email` (the link), `fhir` (the document, posted)."
    )
    sent_at: AwareDatetime


class TrailAnchored(Payload):
    """A service's access trail of the case reached this entry: its position and hash, kept
    outside the service's store so that a trail rewritten whole is found out."""

    service: str = Field(description="The service whose trail it is, e.g. intake.")
    seq: int = Field(ge=1, description="The entry's position in the case's chain.")
    hash: str = Field(pattern="^[0-9a-f]{64}$", description="The entry's SHA-256 chain hash.")
    anchored_at: AwareDatetime


# ce_type -> (topic, payload model): the registry readers decode by.
EVENT_TYPES: dict[str, tuple[str, type[Payload]]] = {
    "avis.case.submitted.v1": (CASE_SUBMITTED, CaseSubmitted),
    "avis.case.withdrawn.v1": (CASE_SUBMITTED, CaseWithdrawn),
    "avis.case.claimed.v1": (CASE_SUBMITTED, CaseClaimed),
    "avis.case.erased.v1": (CASE_SUBMITTED, CaseErased),
    "avis.case.keyed.v1": (CASE_SUBMITTED, CaseKeyed),
    "avis.case.information-provided.v1": (CASE_SUBMITTED, InformationProvided),
    "avis.review.assigned.v1": (REVIEW_ASSIGNED, ReviewAssigned),
    "avis.review.accepted.v1": (REVIEW_ASSIGNED, ReviewAccepted),
    "avis.review.declined.v1": (REVIEW_ASSIGNED, ReviewDeclined),
    "avis.review.information-requested.v1": (REVIEW_ASSIGNED, InformationRequested),
    "avis.review.resumed.v1": (REVIEW_ASSIGNED, ReviewResumed),
    "avis.review.second-reading-requested.v1": (REVIEW_ASSIGNED, SecondReadingRequested),
    "avis.review.second-reading-commented.v1": (REVIEW_ASSIGNED, SecondReadingCommented),
    "avis.review.second-reading-agreed.v1": (REVIEW_ASSIGNED, SecondReadingAgreed),
    "avis.review.follow-up-asked.v1": (REVIEW_ASSIGNED, FollowUpAsked),
    "avis.review.translation-queued.v1": (REVIEW_ASSIGNED, TranslationQueued),
    "avis.review.translation-done.v1": (REVIEW_ASSIGNED, TranslationDone),
    "avis.review.completed.v1": (REVIEW_COMPLETED, ReviewCompleted),
    "avis.review.follow-up-answered.v1": (REVIEW_COMPLETED, FollowUpAnswered),
    "avis.report.ready.v1": (REPORT_READY, ReportReady),
    "avis.report.physician-copy-sent.v1": (REPORT_READY, PhysicianCopySent),
    "avis.audit.anchored.v1": (AUDIT_ANCHORED, TrailAnchored),
}
TYPE_OF: dict[type[Payload], str] = {model: ce_type for ce_type, (_, model) in EVENT_TYPES.items()}
# The anchors' topic: read whole by the audit command, never consumed by a service.
ANCHORS_CHANNEL = (
    "Compacted; key = <service>/<case id>: the last anchor of each service's trail of each case."
)


def topic_of(payload: Payload) -> str:
    """The topic an event of this payload is published on."""
    return EVENT_TYPES[TYPE_OF[type(payload)]][0]


CLOUDEVENT_HEADERS = {
    "ce_specversion": "CloudEvents version, always 1.0",
    "ce_id": "Event id, fixed when the event enters the outbox; the deduplication key",
    "ce_source": "Producing service, e.g. /avis/intake",
    "ce_type": "Event type, e.g. avis.case.submitted.v1",
    "ce_time": "When the fact happened (RFC 3339)",
    "ce_subject": "The case id (also the Kafka key)",
    "content-type": "application/json",
    "traceparent": "W3C trace context of the case's trace",
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each event type's payload."""
    return {ce_type: model.model_json_schema() for ce_type, (_, model) in EVENT_TYPES.items()}


def sealed_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each sealed content, named `sealed.<Model>` as its file is."""
    return {
        f"sealed.{content.__name__}": content.model_json_schema() for content in SEALED_CONTENTS
    }


# What a service declares it sends or receives: a topic (every event type on it), or one type.
Declared = str | type["Payload"]


def ce_types_of(declared: Iterable[Declared]) -> set[str]:
    """The event types (`ce_type`) a declaration names."""
    types: set[str] = set()
    for item in declared:
        if isinstance(item, str):
            on_topic = {t for t, (topic, _) in EVENT_TYPES.items() if topic == item}
            if not on_topic:
                raise ValueError(f"{item!r} is not a topic of the platform")
            types |= on_topic
        else:
            types.add(TYPE_OF[item])
    return types


def asyncapi(
    title: str = "Avis events",
    sends: Iterable[Declared] | None = None,
    receives: Iterable[Declared] | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of what a service sends and receives (everything by default).

    The one generator of the platform's event documentation: each service serves its own at
    `/asyncapi.json` (sends from its declaration, receives from its `runtime.on`
    registrations), and `make asyncapi` writes the whole platform's to docs/.
    """
    every = set(EVENT_TYPES)
    sent = every if sends is None else ce_types_of(sends)
    received = every if receives is None else ce_types_of(receives)
    headers = {
        "type": "object",
        "required": [h for h in CLOUDEVENT_HEADERS if h != "traceparent"],
        "properties": {
            h: {"type": "string", "description": d} for h, d in CLOUDEVENT_HEADERS.items()
        },
    }
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    for ce_type, (topic, model) in EVENT_TYPES.items():
        if ce_type not in sent | received:
            continue
        name = model.__name__
        messages[name] = {
            "name": ce_type,
            "title": name,
            "summary": (model.__doc__ or "").strip(),
            "contentType": "application/json",
            "headers": headers,
            "payload": model.model_json_schema(ref_template="#/components/schemas/{model}"),
        }
        about = f"Dead letters go to {dlq(topic)}." if topic in TOPICS else ANCHORS_CHANNEL
        channel = channels.setdefault(
            topic, {"address": topic, "description": about, "messages": {}}
        )
        channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
    schemas: dict[str, Any] = {}
    for message in messages.values():
        schemas.update(message["payload"].pop("$defs", {}))
    for content in SEALED_CONTENTS:
        # What a sealed field holds once opened; the field names it in `x-sealed-content`.
        schema = content.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[content.__name__] = schema
    operations: dict[str, Any] = {}
    for topic in sorted(channels):
        for action, wanted in (("send", sent), ("receive", received)):
            refs = [
                {"$ref": f"#/channels/{topic}/messages/{model.__name__}"}
                for ce_type, (on, model) in EVENT_TYPES.items()
                if on == topic and ce_type in wanted
            ]
            if refs:
                operations[f"{action}-{topic}"] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{topic}"},
                    "messages": refs,
                }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": title,
            "version": "1.0.0",
            "description": "CloudEvents 1.0 in Kafka binary mode; key = case id.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def write_docs(directory: pathlib.Path) -> list[pathlib.Path]:
    """Write the AsyncAPI document and one JSON Schema per event type under `directory`."""
    written = []
    (directory / "schemas").mkdir(parents=True, exist_ok=True)
    target = directory / "asyncapi.json"
    target.write_text(json.dumps(asyncapi(), indent=2, sort_keys=True) + "\n")
    written.append(target)
    for name, schema in {**json_schemas(), **sealed_schemas()}.items():
        target = directory / "schemas" / f"{name}.json"
        target.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(target)
    return written


def asyncapi_main() -> None:
    """Print the AsyncAPI document, or write it and the schemas with --write DIR."""
    parser = argparse.ArgumentParser(description=asyncapi_main.__doc__)
    parser.add_argument(
        "--write", type=pathlib.Path, help="directory for asyncapi.json and schemas/"
    )
    args = parser.parse_args()
    if args.write:
        for path in write_docs(args.write):
            print(path)
    else:
        print(json.dumps(asyncapi(), indent=2, sort_keys=True))


if __name__ == "__main__":
    asyncapi_main()
