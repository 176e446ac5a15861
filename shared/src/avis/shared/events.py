"""Event payloads: the single source of truth for what travels on Kafka (DESIGN.md section 3).

Payloads carry pseudonymous ids, codes, timestamps and links; whatever is sensitive travels
sealed (`avis.shared.sealing.Sealed`). Readers ignore unknown fields; a change that breaks an
existing reader gets a new `.vN` type. JSON Schema and AsyncAPI are generated from here.
"""

import argparse
import json
import pathlib
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from avis.shared.sealing import Sealed
from avis.shared.topics import CASE_SUBMITTED, REPORT_READY, REVIEW_ASSIGNED, REVIEW_COMPLETED, dlq


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
    partner_id: str | None = None
    document_count: int
    submitted_at: AwareDatetime
    case_url: str = Field(description="Where an authorised reader fetches the case from intake.")
    contact: Sealed = Field(description="Sealed patient contact: names, email, phone, language.")


class CaseWithdrawn(Payload):
    """The patient or partner withdrew the case before its report."""

    withdrawn_at: AwareDatetime


class ReviewAssigned(Payload):
    """A specialist was assigned to review the case; the SLA clock runs."""

    assignment_id: str
    reviewer_id: str
    specialty: Specialty
    assigned_at: AwareDatetime
    due_at: AwareDatetime


class ReviewAccepted(Payload):
    """The assigned specialist accepted the review."""

    assignment_id: str
    reviewer_id: str
    accepted_at: AwareDatetime


class ReviewDeclined(Payload):
    """The assigned specialist declined; another will be assigned."""

    assignment_id: str
    reviewer_id: str
    declined_at: AwareDatetime
    reason_code: str


class ReviewCompleted(Payload):
    """A version of the structured opinion was written (a correction is a higher version)."""

    assignment_id: str
    reviewer_id: str
    specialty: Specialty
    version: int = Field(ge=1)
    completed_at: AwareDatetime
    opinion: Sealed = Field(description="Sealed structured opinion and reviewer display name.")


class ReportReady(Payload):
    """The feedback report of a case is ready to be read."""

    report_id: str
    version: int = Field(ge=1)
    languages: list[Language]
    formats: list[str]
    ready_at: AwareDatetime
    report_url: str


# ce_type -> (topic, payload model): the registry readers decode by.
EVENT_TYPES: dict[str, tuple[str, type[Payload]]] = {
    "avis.case.submitted.v1": (CASE_SUBMITTED, CaseSubmitted),
    "avis.case.withdrawn.v1": (CASE_SUBMITTED, CaseWithdrawn),
    "avis.review.assigned.v1": (REVIEW_ASSIGNED, ReviewAssigned),
    "avis.review.accepted.v1": (REVIEW_ASSIGNED, ReviewAccepted),
    "avis.review.declined.v1": (REVIEW_ASSIGNED, ReviewDeclined),
    "avis.review.completed.v1": (REVIEW_COMPLETED, ReviewCompleted),
    "avis.report.ready.v1": (REPORT_READY, ReportReady),
}
TYPE_OF: dict[type[Payload], str] = {model: ce_type for ce_type, (_, model) in EVENT_TYPES.items()}


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


def asyncapi(
    title: str = "Avis events",
    sends: Sequence[str] | None = None,
    receives: Sequence[str] | None = None,
) -> dict[str, Any]:
    """An AsyncAPI 3.0 document for the given topics (all of them by default)."""
    topics = sorted({t for t, _ in EVENT_TYPES.values()})
    if sends is None:
        sends = topics
    if receives is None:
        receives = topics
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
        name = model.__name__
        messages[name] = {
            "name": ce_type,
            "title": name,
            "summary": (model.__doc__ or "").strip(),
            "contentType": "application/json",
            "headers": headers,
            "payload": model.model_json_schema(ref_template="#/components/schemas/{model}"),
        }
        channel = channels.setdefault(
            topic,
            {"address": topic, "description": f"Dead letters go to {dlq(topic)}.", "messages": {}},
        )
        channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
    schemas: dict[str, Any] = {}
    for message in messages.values():
        schemas.update(message["payload"].pop("$defs", {}))
    operations: dict[str, Any] = {}
    for topic in topics:
        refs = [{"$ref": f"#/channels/{topic}/messages/{m}"} for m in channels[topic]["messages"]]
        for action, wanted in (("send", sends), ("receive", receives)):
            if topic in wanted:
                operations[f"{action}-{topic}"] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{topic}"},
                    "messages": refs,
                }
    used = set(sends) | set(receives)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": title,
            "version": "1.0.0",
            "description": "CloudEvents 1.0 in Kafka binary mode; key = case id.",
        },
        "defaultContentType": "application/json",
        "channels": {t: c for t, c in channels.items() if t in used},
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
    for ce_type, schema in json_schemas().items():
        target = directory / "schemas" / f"{ce_type}.json"
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
