"""A case's journey through intake over HTTP, on the real broker and store: drafted with two
records, submitted (the event on `case-submitted`, contact sealed), then its status and
timeline following the review and report events fed to their real topics."""

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from avis.intake.models import CaseCreate
from avis.shared import topics
from avis.shared.envelope import Event
from avis.shared.events import (
    CaseSubmitted,
    ReportReady,
    ReviewAccepted,
    ReviewAssigned,
    ReviewCompleted,
    ReviewDeclined,
)
from avis.shared.observability import trace_id_of
from avis.shared.sealing import Keyring
from avis.shared.topics import dlq
from tests.support.basics import eventually, publish, unique
from tests.support.intake import Intake
from tests.support.kms import opened
from tests.support.samples import case_body, consent_body, pdf, png, upload
from tests.support.topics import TopicReader

pytestmark = pytest.mark.infra

# The topics are shared: a review service under test elsewhere may react to the cases these
# tests submit (assign one of its reviewers, in real time). The events fed here are dated a
# day ahead, so they are the newest the case sees, and the timeline is read for their ids.
AHEAD = timedelta(days=1)

CE_HEADERS = (
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "ce_subject",
    "content-type",
    "traceparent",
)


async def submitted_case(intake: Intake, **body: object) -> tuple[str, str]:
    """A case drafted, given one record and submitted; (case id, patient sub)."""
    patient = intake.client()
    created = await patient.post("/v1/cases", json=case_body(**body))
    assert created.status_code == 201, created.text
    case_id = created.json()["case_id"]
    stored = await patient.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))
    assert stored.status_code == 201, stored.text
    submitted = await patient.post(f"/v1/cases/{case_id}/submit", json=consent_body())
    assert submitted.status_code == 200, submitted.text
    return case_id, patient.sub  # type: ignore[attr-defined]


def mine(view: dict[str, Any], ours: list[str]) -> list[dict[str, Any]]:
    """The timeline entries intake made itself or that the events `ours` caused."""
    return [e for e in view["timeline"] if e["id"] in ours or e["kind"] in ("created", "submitted")]


async def status_of(intake: Intake, case_id: str) -> str:
    case = await intake.store.cases.find_one({"_id": case_id}, {"status": 1})
    assert case is not None
    return str(case["status"])


async def test_draft_two_records_submit_publishes_one_sealed_event(intake: Intake) -> None:
    tail = await TopicReader(topics.CASE_SUBMITTED).mark()
    patient = intake.client()
    body = case_body()
    created = await patient.post("/v1/cases", json=body)
    assert created.status_code == 201, created.text
    case = created.json()
    case_id = case["case_id"]
    assert case["status"] == "draft"
    assert created.headers["location"] == f"/v1/cases/{case_id}"
    assert case["reference"].startswith(f"AV-{datetime.now(UTC).year}-")
    assert [e["kind"] for e in case["timeline"]] == ["created"]
    # Each entry kept as one text, which the local store decodes at once (docs/store-contract.md)
    stored = await intake.runtime.db["cases"].find_one({"_id": case_id}, {"timeline": 1})
    assert stored is not None and json.loads(stored["timeline"][0])["kind"] == "created"

    report = pdf("report")
    scan = png("scan")
    first = await patient.post(
        f"/v1/cases/{case_id}/documents", **upload(report, "imaging_report", "compte-rendu.pdf")
    )
    second = await patient.post(
        f"/v1/cases/{case_id}/documents", **upload(scan, "imaging_report", "scan.png", "image/png")
    )
    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    assert first.json()["content_type"] == "application/pdf"
    assert first.json()["filename"] == "compte-rendu.pdf"
    assert second.json()["content_type"] == "image/png"

    again = await patient.post(f"/v1/cases/{case_id}/documents", **upload(report, "other", "x.pdf"))
    assert again.status_code == 200, "the same file twice is recognised"
    assert again.json()["document_id"] == first.json()["document_id"]
    assert await intake.store.documents.count_documents({"case_id": case_id}) == 2

    downloaded = await patient.get(f"/v1/cases/{case_id}/documents/{first.json()['document_id']}")
    assert downloaded.status_code == 200
    assert downloaded.content == report
    assert downloaded.headers["content-type"] == "application/pdf"

    submitted = await patient.post(
        f"/v1/cases/{case_id}/submit", json=consent_body("review", "share_with_partner")
    )
    assert submitted.status_code == 200, submitted.text
    view = submitted.json()
    assert view["status"] == "submitted"
    assert view["consent"]["scopes"] == ["review", "share_with_partner"]
    assert len(view["documents"]) == 2

    twice = await patient.post(f"/v1/cases/{case_id}/submit", json=consent_body())
    assert twice.status_code == 200
    entries = [e for e in twice.json()["timeline"] if e["kind"] in ("created", "submitted")]
    assert entries == view["timeline"], "submitting twice changes nothing"

    (record,) = await tail.records_for(case_id, expect=1)
    headers = {k: v.decode() for k, v in record.headers}
    assert set(CE_HEADERS) <= set(headers)
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_type"] == "avis.case.submitted.v1"
    assert headers["ce_source"] == "/avis/intake"
    assert headers["ce_subject"] == case_id
    assert headers["content-type"] == "application/json"
    assert record.key == case_id.encode()
    event = Event.from_kafka(record.topic, dict(record.headers), record.value or b"")
    payload = event.payload()
    assert isinstance(payload, CaseSubmitted)
    assert payload.reference == case["reference"]
    assert payload.document_count == 2
    assert payload.specialty == "oncology"
    assert payload.physician_institution == "750712184"
    assert payload.case_url == f"http://intake.test/v1/cases/{case_id}"
    contact = json.loads(await opened(intake.settings, payload.contact, aad=event.id))
    patient_in = body["patient"]
    assert contact == {
        "given_name": patient_in["given_name"],
        "family_name": patient_in["family_name"],
        "email": patient_in["email"],
        "phone": patient_in["phone"],
        "birth_date": patient_in["birth_date"],
        "preferred_language": "fr",
    }
    raw = (record.value or b"").decode()
    for clear in ("Camille", "Martin", "camille.martin@example.org", "Nodule"):
        assert clear not in raw

    stored = await intake.store.cases.find_one({"_id": case_id})
    assert stored is not None
    assert trace_id_of(stored["traceparent"]) == trace_id_of(headers["traceparent"])
    await eventually(lambda: intake.store.cases.find_one({"_id": case_id, "outbox_pending": 0}))


async def test_timeline_follows_review_and_report_events(intake: Intake) -> None:
    case_id, patient_sub = await submitted_case(intake)
    patient = intake.client(patient_sub)
    reviewer = intake.client(role="reviewer")
    stranger = intake.client(role="reviewer")
    now = datetime.now(UTC) + AHEAD
    assignment = unique("as")

    assigned = await intake.publish(
        ReviewAssigned(
            case_id=case_id,
            assignment_id=assignment,
            reviewer_id=reviewer.sub,  # type: ignore[attr-defined]
            specialty="oncology",
            assigned_at=now,
            due_at=now + timedelta(days=7),
        )
    )
    await intake.consumed(assigned)
    assert await status_of(intake, case_id) == "assigned"
    clinical = await reviewer.get(f"/v1/cases/{case_id}/clinical")
    assert clinical.status_code == 200, clinical.text
    assert clinical.json()["patient"] is None, "reviewers do not get the patient's identity"
    assert clinical.json()["clinical_summary"]
    document_id = clinical.json()["documents"][0]["document_id"]
    assert (await reviewer.get(f"/v1/cases/{case_id}/documents/{document_id}")).status_code == 200
    assert (await stranger.get(f"/v1/cases/{case_id}/clinical")).status_code == 404
    listed = await reviewer.get("/v1/cases")
    assert [c["case_id"] for c in listed.json()["items"]] == [case_id]

    # redelivered: the same event again adds nothing
    await publish(intake.runtime, assigned)
    accepted = await intake.publish(
        ReviewAccepted(
            case_id=case_id,
            assignment_id=assignment,
            reviewer_id=reviewer.sub,  # type: ignore[attr-defined]
            accepted_at=now + timedelta(minutes=5),
        )
    )
    await intake.consumed(accepted)
    assert await status_of(intake, case_id) == "in_review"

    completed = await intake.publish(
        ReviewCompleted(
            case_id=case_id,
            assignment_id=assignment,
            reviewer_id=reviewer.sub,  # type: ignore[attr-defined]
            specialty="oncology",
            version=1,
            completed_at=now + timedelta(days=2),
            opinion=Keyring.from_settings(intake.settings).seal(b"{}", aad="opinion"),
        )
    )
    ready = await intake.publish(
        ReportReady(
            case_id=case_id,
            report_id="rep-1",
            version=1,
            languages=["fr"],
            formats=["json", "pdf"],
            ready_at=now + timedelta(days=3),
            report_url="http://reports.test/v1/reports/rep-1",
        )
    )
    await intake.consumed(completed)
    await intake.consumed(ready)
    view = (await patient.get(f"/v1/cases/{case_id}")).json()
    assert view["status"] == "report_ready"
    ours = [assigned.id, accepted.id, completed.id, ready.id]
    ids = [e["id"] for e in view["timeline"]]
    assert len(ids) == len(set(ids)), "a redelivered event adds nothing"
    assert [(e["kind"], e["status"]) for e in mine(view, ours)] == [
        ("created", "draft"),
        ("submitted", "submitted"),
        ("assigned", "assigned"),
        ("accepted", "in_review"),
        ("review_completed", "in_review"),
        ("report_ready", "report_ready"),
    ]
    assert [e["id"] for e in mine(view, ours)[2:]] == ours

    # an older event arriving late changes nothing, and a redelivery neither
    late = await intake.publish(
        ReviewAssigned(
            case_id=case_id,
            assignment_id="as-0",
            reviewer_id=unique("reviewer"),
            specialty="oncology",
            assigned_at=now - timedelta(hours=1),
            due_at=now + timedelta(days=7),
        )
    )
    await publish(intake.runtime, ready)
    await intake.consumed(late)
    after = (await patient.get(f"/v1/cases/{case_id}")).json()
    assert after["status"] == "report_ready"
    assert mine(after, ours) == mine(view, ours)
    assert late.id not in {e["id"] for e in after["timeline"]}
    assert len(after["timeline"]) == len({e["id"] for e in after["timeline"]})

    withdraw = await patient.post(f"/v1/cases/{case_id}/withdraw")
    assert withdraw.status_code == 409
    assert withdraw.headers["content-type"] == "application/problem+json"


async def test_declined_review_takes_access_away(intake: Intake) -> None:
    case_id, _ = await submitted_case(intake)
    first = intake.client(role="reviewer")
    second = intake.client(role="reviewer")
    now = datetime.now(UTC) + AHEAD
    first_assignment, second_assignment = unique("as"), unique("as")

    def assign(reviewer_sub: str, assignment: str, at: datetime) -> ReviewAssigned:
        return ReviewAssigned(
            case_id=case_id,
            assignment_id=assignment,
            reviewer_id=reviewer_sub,
            specialty="oncology",
            assigned_at=at,
            due_at=at + timedelta(days=7),
        )

    event = await intake.publish(assign(first.sub, first_assignment, now))  # type: ignore[attr-defined]
    await intake.consumed(event)
    assert (await first.get(f"/v1/cases/{case_id}/clinical")).status_code == 200

    declined = await intake.publish(
        ReviewDeclined(
            case_id=case_id,
            assignment_id=first_assignment,
            reviewer_id=first.sub,  # type: ignore[attr-defined]
            declined_at=now + timedelta(minutes=1),
            reason_code="conflict_of_interest",
        )
    )
    await intake.consumed(declined)
    assert await status_of(intake, case_id) == "assigned", "status never moves backwards"
    assert (await first.get(f"/v1/cases/{case_id}/clinical")).status_code == 404
    assert (await first.get(f"/v1/cases/{case_id}")).status_code == 404

    event = await intake.publish(
        assign(second.sub, second_assignment, now + timedelta(minutes=2))  # type: ignore[attr-defined]
    )
    await intake.consumed(event)
    assert (await second.get(f"/v1/cases/{case_id}/clinical")).status_code == 200
    assert (await first.get(f"/v1/cases/{case_id}/clinical")).status_code == 404


async def test_event_for_a_case_intake_does_not_know_is_dead_lettered(intake: Intake) -> None:
    # Intake files every case: nothing but a restore of its data makes this one known, so the
    # event goes to the dead letters at once (replayable), never silently dropped or waited on.
    stranger = unique("case")
    now = datetime.now(UTC)
    letters = await TopicReader(dlq(topics.REVIEW_ASSIGNED)).mark()
    event = await intake.publish(
        ReviewAssigned(
            case_id=stranger,
            assignment_id="as-x",
            reviewer_id="r",
            specialty="oncology",
            assigned_at=now,
            due_at=now,
        )
    )
    (letter,) = await letters.records_for(stranger)
    headers = dict(letter.headers)
    assert headers["ce_id"] == event.id.encode()
    assert headers["avis_dlq_reason"].startswith(b"unknown case: intake never filed it")
    assert headers["avis_dlq_group"] == f"avis-{intake.settings.service_name}".encode()
    assert not await intake.runtime.messaging.processed(event)
    assert await intake.store.cases.find_one({"_id": stranger}) is None


async def test_withdrawn_before_report_publishes_withdrawn(intake: Intake) -> None:
    tail = await TopicReader(topics.CASE_SUBMITTED).mark()
    case_id, patient_sub = await submitted_case(intake)
    patient = intake.client(patient_sub)
    withdrawn = await patient.post(f"/v1/cases/{case_id}/withdraw")
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["status"] == "withdrawn"
    again = await patient.post(f"/v1/cases/{case_id}/withdraw")
    assert again.status_code == 200
    assert again.json()["timeline"] == withdrawn.json()["timeline"]
    records = await tail.records_for(case_id, expect=2)
    types = [dict(r.headers)["ce_type"].decode() for r in records]
    assert types == ["avis.case.submitted.v1", "avis.case.withdrawn.v1"]
    body = json.loads(records[1].value or b"{}")
    assert set(body) == {"case_id", "withdrawn_at"}


async def test_idempotency_key_returns_the_same_case(intake: Intake) -> None:
    patient = intake.client()
    key = unique("key")
    first = await patient.post("/v1/cases", json=case_body(), headers={"Idempotency-Key": key})
    again = await patient.post("/v1/cases", json=case_body(), headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json()["case_id"] == first.json()["case_id"]
    assert again.json()["reference"] == first.json()["reference"]

    other_body = await patient.post(
        "/v1/cases", json=case_body(urgency="urgent"), headers={"Idempotency-Key": key}
    )
    assert other_body.status_code == 422
    assert other_body.json()["type"].endswith("/idempotency-key-reused")

    someone_else = await intake.client().post(
        "/v1/cases", json=case_body(), headers={"Idempotency-Key": key}
    )
    assert someone_else.status_code == 201
    assert someone_else.json()["case_id"] != first.json()["case_id"]

    # What the store keeps to tell a replay is a keyed digest of the body, never a plain hash
    # that anyone who guesses the body could compare.
    claims = await intake.store.idempotency.find({"case_id": first.json()["case_id"]}).to_list()
    (stored,) = [c["fingerprint"] for c in claims]
    plain = CaseCreate.model_validate(case_body()).model_dump_json().encode()
    assert hashlib.sha256(plain).hexdigest() not in stored
    kid, _, digest = stored.rpartition(":")
    assert kid == intake.service.keyring.derive("x")[0] and len(digest) == 64


async def test_an_idempotency_key_is_purged_after_its_period(intake: Intake) -> None:
    """AVIS_INTAKE_IDEMPOTENCY_KEY_DAYS (7) after it was used, the sweep purges the key: the
    same key then makes a new case."""
    patient = intake.client()
    key = {"Idempotency-Key": unique("key")}
    first = (await patient.post("/v1/cases", json=case_body(), headers=key)).json()["case_id"]
    calendar = intake.store.calendar
    await calendar.sweep(datetime.now(UTC) + timedelta(days=7))  # its last day: kept
    kept = await patient.post("/v1/cases", json=case_body(), headers=key)
    assert kept.status_code == 200 and kept.json()["case_id"] == first
    assert await calendar.sweep(datetime.now(UTC) + timedelta(days=8)) >= 1
    assert not await intake.store.idempotency.find({"case_id": first}).to_list()
    again = await patient.post("/v1/cases", json=case_body(), headers=key)
    assert again.status_code == 201 and again.json()["case_id"] != first
    assert (await patient.get(f"/v1/cases/{first}")).status_code == 200, "the case stays"


async def test_list_is_paginated_filtered_and_scoped(intake: Intake) -> None:
    patient = intake.client()
    ids = []
    for _ in range(3):
        created = await patient.post("/v1/cases", json=case_body())
        ids.append(created.json()["case_id"])
    page = await patient.get("/v1/cases", params={"limit": 2})
    assert page.status_code == 200
    assert [c["case_id"] for c in page.json()["items"]] == ids[::-1][:2], "newest first"
    cursor = page.json()["next_cursor"]
    assert cursor
    rest = await patient.get("/v1/cases", params={"limit": 2, "cursor": cursor})
    assert [c["case_id"] for c in rest.json()["items"]] == [ids[0]]
    assert rest.json()["next_cursor"] is None

    await patient.post(f"/v1/cases/{ids[1]}/documents", **upload(pdf()))
    await patient.post(f"/v1/cases/{ids[1]}/submit", json=consent_body())
    submitted = await patient.get("/v1/cases", params={"status": "submitted"})
    assert [c["case_id"] for c in submitted.json()["items"]] == [ids[1]]

    assert (await intake.client().get("/v1/cases")).json()["items"] == []
    partner = intake.client(role="partner", partner_id=unique("p"))
    filed = await partner.post("/v1/cases", json=case_body(partner_reference="INS-42"))
    assert filed.status_code == 201, filed.text
    listed = await partner.get("/v1/cases")
    assert [c["case_id"] for c in listed.json()["items"]] == [filed.json()["case_id"]]
    other_partner = intake.client(role="partner", partner_id=unique("p"))
    assert (await other_partner.get("/v1/cases")).json()["items"] == []
    coordinator = intake.client(role="coordinator")
    everything = await coordinator.get("/v1/cases", params={"limit": 100})
    assert set(ids) | {filed.json()["case_id"]} <= {
        c["case_id"] for c in everything.json()["items"]
    }


async def test_delete_record_while_draft(intake: Intake) -> None:
    patient = intake.client()
    case_id = (await patient.post("/v1/cases", json=case_body())).json()["case_id"]
    stored = await patient.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))
    document_id = stored.json()["document_id"]
    deleted = await patient.delete(f"/v1/cases/{case_id}/documents/{document_id}")
    assert deleted.status_code == 204
    assert await intake.store.documents.find_one({"case_id": case_id}) is None
    assert await intake.store.chunks.find_one({"record_id": f"{case_id}:{document_id}"}) is None
    gone = await patient.get(f"/v1/cases/{case_id}/documents/{document_id}")
    assert gone.status_code == 404
    again = await patient.delete(f"/v1/cases/{case_id}/documents/{document_id}")
    assert again.status_code == 404
