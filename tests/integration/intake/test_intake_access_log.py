"""Intake's access trail over the real store: every read and write of a case's health data by
a person, refusals included, in order, in plain words for the patient; a changed, removed (the
last one included) or reordered entry is named by `verify`."""

import asyncio
import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from avis.shared.audit import AuditTrail, entry_id, verify_all

pytestmark = pytest.mark.infra

DRAFT = {
    "patient": {
        "given_name": "Inès",
        "family_name": "Marchal",
        "birth_date": "1975-02-11",
        "email": "ines.marchal@example.org",
        "preferred_language": "fr",
    },
    "specialty": "cardiology",
    "questions": ["diagnosis_clarification"],
    "clinical_summary": "Palpitations at night.",
}
RECORD = b"%PDF-1.4\n% access log\ntrailer << >>\n%%EOF\n"
REASON = {"X-Avis-Reason": "Checking the records before assignment"}


async def filed(intake: Any) -> tuple[Any, str, str]:
    """A patient's submitted case: the patient's client, the case id and its record's id."""
    patient = intake.client()
    case_id = (await patient.post("/v1/cases", json=DRAFT)).json()["case_id"]
    upload = await patient.post(
        f"/v1/cases/{case_id}/documents",
        files={"file": ("ecg.pdf", RECORD, "application/pdf")},
        data={"kind": "test_result"},
    )
    assert upload.status_code == 201, upload.text
    at = datetime.now(UTC).isoformat()
    consent = {"text_version": "c-1", "accepted_at": at, "scopes": ["review"]}
    submit = await patient.post(f"/v1/cases/{case_id}/submit", json={"consent": consent})
    assert submit.status_code == 200, submit.text
    return patient, case_id, upload.json()["document_id"]


async def test_the_patient_reads_who_looked_at_their_case(intake: Any) -> None:
    patient, case_id, document_id = await filed(intake)
    coordinator = intake.client(role="coordinator")
    stranger = intake.client()
    assert (await coordinator.get(f"/v1/cases/{case_id}/clinical", headers=REASON)).is_success
    assert (await stranger.get(f"/v1/cases/{case_id}/clinical")).status_code == 404
    assert (await stranger.get(f"/v1/cases/{case_id}")).status_code == 404
    assert (await patient.get(f"/v1/cases/{case_id}")).is_success

    log = await patient.get(f"/v1/cases/{case_id}/access-log")
    assert log.status_code == 200, log.text
    items = log.json()["items"]
    assert [(e["role"], e["action"], e["outcome"], e["you"]) for e in items] == [
        ("patient", "case.create", "allowed", True),
        ("patient", "document.add", "allowed", True),
        ("patient", "case.submit", "allowed", True),
        ("coordinator", "clinical.read", "allowed", False),
        ("patient", "clinical.read", "refused", False),
        ("patient", "case.read", "refused", False),
        ("patient", "case.read", "allowed", True),
    ]
    assert [e["seq"] for e in items] == list(range(1, 8))
    assert items[1]["document_id"] == document_id
    coordinator_read, refused = items[3], items[4]
    assert coordinator_read["purpose"] == "break-glass" and coordinator_read["reason"] is None
    assert refused["status"] == 404 and refused["reader"] != items[0]["reader"]
    assert refused["text"].startswith("A patient tried to read the clinical content")
    assert items[0]["text"].startswith("You drafted the case on ")
    assert "Checking" not in log.text, "the reason stays out of the patient's view"
    # The reason is sealed at rest, and nothing in the trail names the patient.
    stored = await intake.store.trail.trail.find_one({"_id": entry_id(case_id, 4)})
    assert "Checking" not in str(stored) and "Marchal" not in str(stored)

    # Page by page, in the same order.
    first = (await patient.get(f"/v1/cases/{case_id}/access-log?limit=4")).json()
    assert [e["seq"] for e in first["items"]] == [1, 2, 3, 4] and first["next_cursor"] == "4"
    rest = await patient.get(f"/v1/cases/{case_id}/access-log?cursor=4")
    assert [e["seq"] for e in rest.json()["items"]] == [5, 6, 7]
    assert rest.json()["next_cursor"] is None


async def test_only_the_patient_and_coordinators_read_the_trail(intake: Any) -> None:
    _, case_id, _ = await filed(intake)
    assert (await intake.client().get(f"/v1/cases/{case_id}/access-log")).status_code == 404
    reviewer = intake.client(role="reviewer")
    assert (await reviewer.get(f"/v1/cases/{case_id}/access-log")).status_code == 403
    # A machine never reads clinical content: refused (403), and the refusal is in the trail.
    service = intake.client(role="service")
    assert (await service.get(f"/v1/cases/{case_id}/clinical")).status_code == 403
    coordinator = intake.client(role="coordinator")
    items = (await coordinator.get(f"/v1/cases/{case_id}/access-log")).json()["items"]
    assert [e["action"] for e in items] == ["case.create", "document.add", "case.submit"]


async def test_verify_names_a_changed_a_removed_and_a_swapped_entry(intake: Any) -> None:
    patient, case_id, _ = await filed(intake)
    for _ in range(3):
        assert (await patient.get(f"/v1/cases/{case_id}/clinical")).is_success
    trail: AuditTrail = intake.store.trail
    entries = trail.trail
    assert await trail.verify(case_id) is None  # six entries, whole
    await trail.keep([case_id])  # their head written, as the next anchoring round does

    await entries.update_one({"_id": entry_id(case_id, 2)}, {"$set": {"role": "coordinator"}})
    found = await verify_all(trail, [case_id])
    assert [(b.seq, b.kind) for b in found] == [(2, "changed")]
    await entries.update_one({"_id": entry_id(case_id, 2)}, {"$set": {"role": "patient"}})
    assert await trail.verify(case_id) is None

    fourth = await entries.find_one({"_id": entry_id(case_id, 4)})
    fifth = await entries.find_one({"_id": entry_id(case_id, 5)})
    assert fourth is not None and fifth is not None
    await entries.replace_one({"_id": fourth["_id"]}, {**fifth, "_id": fourth["_id"]})
    await entries.replace_one({"_id": fifth["_id"]}, {**fourth, "_id": fifth["_id"]})
    broken = await trail.verify(case_id)
    assert broken is not None and (broken.seq, broken.kind) == (4, "reordered")
    await entries.replace_one({"_id": fourth["_id"]}, fourth)
    await entries.replace_one({"_id": fifth["_id"]}, fifth)
    assert await trail.verify(case_id) is None

    await entries.delete_one({"_id": entry_id(case_id, 6)})
    broken = await trail.verify(case_id)
    assert broken is not None and (broken.seq, broken.kind) == (6, "removed")
    await entries.delete_one({"_id": entry_id(case_id, 3)})
    broken = await trail.verify(case_id)
    assert broken is not None and (broken.seq, broken.kind) == (3, "removed")


async def test_a_polled_status_is_one_access_a_clinical_read_each_time(intake: Any) -> None:
    patient, case_id, _ = await filed(intake)
    coordinator = intake.client(role="coordinator")
    for _ in range(5):  # a page polling the timeline
        assert (await patient.get(f"/v1/cases/{case_id}")).is_success
    for _ in range(2):
        assert (await coordinator.get(f"/v1/cases/{case_id}/clinical", headers=REASON)).is_success
    assert (await patient.get(f"/v1/cases/{case_id}")).is_success  # after another's access

    items = (await patient.get(f"/v1/cases/{case_id}/access-log")).json()["items"]
    assert [(e["role"], e["action"]) for e in items[3:]] == [
        ("patient", "case.read"),
        ("coordinator", "clinical.read"),
        ("coordinator", "clinical.read"),
        ("patient", "case.read"),
    ]
    assert (await verify_all(intake.store.trail, [case_id])) == []


async def test_coordinators_export_the_trail_as_fhir_audit_events(intake: Any) -> None:
    patient, case_id, document_id = await filed(intake)
    coordinator = intake.client(role="coordinator")
    assert (await coordinator.get(f"/v1/cases/{case_id}/clinical", headers=REASON)).is_success
    url = f"/v1/cases/{case_id}/access-log/fhir"
    assert (await patient.get(url)).status_code == 403, "coordinators only"

    first = await coordinator.get(url, params={"limit": 3})
    assert first.status_code == 200, first.text
    assert first.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(first.json())  # valid FHIR R4B, every AuditEvent with it
    assert bundle.type == "collection" and bundle.link is not None
    rest = await coordinator.get(bundle.link[0].url)
    assert rest.status_code == 200, rest.text
    events = [
        AuditEvent.model_validate(e["resource"])
        for page in (first.json(), rest.json())
        for e in page["entry"]
    ]
    assert [(e.subtype[0].code, e.action, e.outcome) for e in events] == [
        ("case.create", "C", "0"),
        ("document.add", "C", "0"),
        ("case.submit", "U", "0"),
        ("clinical.read", "R", "0"),
    ]
    assert "link" not in rest.json(), "the last page has no next"
    read = events[3]
    assert [c.code for c in read.purposeOfEvent[0].coding] == ["ETREAT", "break-glass"]
    assert read.agent[0].type.coding[0].code == "coordinator" and read.agent[0].requestor
    assert events[1].entity[1].what.identifier.value == document_id
    # The chain goes along, and the stated reason, which may hold health data, does not.
    hashes = [{d.type: d.valueString for d in e.entity[0].detail} for e in events]
    assert all(h["prev"] == p["hash"] for p, h in itertools.pairwise(hashes))
    assert "Checking" not in first.text + rest.text and "Marchal" not in first.text + rest.text


async def test_pruning_leaves_a_signed_checkpoint_that_verify_proves(intake: Any) -> None:
    patient, case_id, _ = await filed(intake)
    for _ in range(2):  # two reads a second apart: two entries
        assert (await patient.get(f"/v1/cases/{case_id}/clinical")).is_success
        await asyncio.sleep(1.1)
    trail: AuditTrail = intake.store.trail
    keyring = intake.service.keyring
    third = await trail.trail.find_one({"_id": entry_id(case_id, 3)})
    assert third is not None

    assert await trail.prune(case_id, third["at"], keyring) == 2  # the draft and the upload
    assert await trail.trail.find_one({"_id": entry_id(case_id, 1)}) is None
    mark = await trail.checkpoint(case_id)
    assert mark is not None and mark.seq == 2
    assert await trail.verify(case_id, keyring) is None, "what remains is proved"
    assert await trail.prune(case_id, third["at"], keyring) == 0, "nothing more is older"
    log = (await patient.get(f"/v1/cases/{case_id}/access-log")).json()["items"]
    assert [e["seq"] for e in log][:3] == [3, 4, 5]

    # A checkpoint moved forward to hide entry 3, without the key: named.
    hidden = {"seq": 3, "hash": third["hash"]}
    await trail.checkpoints.update_one({"_id": case_id}, {"$set": hidden})
    broken = await trail.verify(case_id, keyring)
    assert broken is not None and (broken.seq, broken.kind) == (3, "changed")
    await trail.checkpoints.update_one({"_id": case_id}, {"$set": {"seq": 2, "hash": mark.hash}})
    assert await trail.verify(case_id, keyring) is None

    # Pruning stops at an entry that does not hold: nothing is pruned past a break.
    await trail.trail.update_one({"_id": entry_id(case_id, 4)}, {"$set": {"role": "reviewer"}})
    assert await trail.prune(case_id, datetime.now(UTC), keyring) == 1  # entry 3 only
    broken = await trail.verify(case_id, keyring)
    assert broken is not None and (broken.seq, broken.kind) == (4, "changed")
