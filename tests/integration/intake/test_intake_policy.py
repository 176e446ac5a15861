"""Intake's tighter reading policy, over the real store: a filing partner reads the clinical
content and the timeline only with the patient's consent to share, and a coordinator's read of
clinical content gives a reason, which is recorded; a reviewer's access ends a set time after
their last report."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from avis.shared.events import ReviewAssigned, ReviewCompleted
from avis.shared.sealing import Keyring

pytestmark = pytest.mark.infra

DRAFT = {
    "patient": {
        "given_name": "Lina",
        "family_name": "Roux",
        "birth_date": "1968-07-21",
        "email": "lina.roux@example.org",
        "preferred_language": "en",
    },
    "specialty": "neurology",
    "questions": ["further_tests"],
    "clinical_summary": "Headaches for a year.",
}
RECORD = b"%PDF-1.4\n% policy\ntrailer << >>\n%%EOF\n"
REASON = {"X-Avis-Reason": "Patient asked by phone about the delay"}


def consent(*scopes: str) -> dict[str, Any]:
    """A submission consenting to `scopes`."""
    at = datetime.now(UTC).isoformat()
    return {"consent": {"text_version": "c-1", "accepted_at": at, "scopes": list(scopes)}}


async def submitted(client: httpx.AsyncClient, *scopes: str) -> tuple[str, str]:
    """A case filed and submitted by `client` with consent to `scopes`: its id and record id."""
    case = await client.post("/v1/cases", json=DRAFT)
    assert case.status_code == 201, case.text
    case_id = case.json()["case_id"]
    stored = await client.post(
        f"/v1/cases/{case_id}/documents",
        files={"file": ("scan.pdf", RECORD + case_id.encode())},
        data={"kind": "imaging_report"},
    )
    assert stored.status_code == 201, stored.text
    done = await client.post(f"/v1/cases/{case_id}/submit", json=consent(*scopes))
    assert done.status_code == 200, done.text
    return case_id, stored.json()["document_id"]


async def test_a_partner_reads_clinical_content_only_with_consent_to_share(intake: Any) -> None:
    partner = intake.client(role="partner")
    case_id, document_id = await submitted(partner, "review")

    clinical = await partner.get(f"/v1/cases/{case_id}/clinical")
    assert clinical.status_code == 404, "no consent to share: the clinical content stays hidden"
    record = await partner.get(f"/v1/cases/{case_id}/documents/{document_id}")
    assert record.status_code == 404
    view = await partner.get(f"/v1/cases/{case_id}")
    assert view.status_code == 200, "the partner still sees that its case exists"
    shown = view.json()
    assert shown["status"] == "submitted"
    assert shown["timeline"] == [] and shown["questions"] == [] and shown["documents"] == []

    shared, shared_document = await submitted(partner, "review", "share_with_partner")
    assert (await partner.get(f"/v1/cases/{shared}/clinical")).status_code == 200
    record = await partner.get(f"/v1/cases/{shared}/documents/{shared_document}")
    assert record.status_code == 200
    full = (await partner.get(f"/v1/cases/{shared}")).json()
    assert [e["kind"] for e in full["timeline"]] == ["created", "submitted"]
    assert full["questions"] == ["further_tests"]


async def test_a_partner_reads_its_own_draft(intake: Any) -> None:
    """Before the patient consents to anything, the draft is the partner's own writing."""
    partner = intake.client(role="partner")
    case_id = (await partner.post("/v1/cases", json=DRAFT)).json()["case_id"]
    assert (await partner.get(f"/v1/cases/{case_id}/clinical")).status_code == 200
    view = (await partner.get(f"/v1/cases/{case_id}")).json()
    assert [e["kind"] for e in view["timeline"]] == ["created"]


async def test_a_coordinator_gives_a_reason_to_read_clinical_content(intake: Any) -> None:
    patient = intake.client()
    case_id, document_id = await submitted(patient, "review")
    coordinator = intake.client(role="coordinator")

    refused = await coordinator.get(f"/v1/cases/{case_id}/clinical")
    assert refused.status_code == 428, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"].endswith("/reason-required")
    download = await coordinator.get(f"/v1/cases/{case_id}/documents/{document_id}")
    assert download.status_code == 428

    read = await coordinator.get(f"/v1/cases/{case_id}/clinical", headers=REASON)
    assert read.status_code == 200, read.text
    download = await coordinator.get(f"/v1/cases/{case_id}/documents/{document_id}", headers=REASON)
    assert download.status_code == 200
    log = await coordinator.get(f"/v1/cases/{case_id}/access-log")
    assert log.status_code == 200, log.text
    reads = [e for e in log.json()["items"] if e["role"] == "coordinator"]
    assert [(e["outcome"], e["status"], e["action"], e["reason"]) for e in reads] == [
        ("refused", 428, "clinical.read", None),
        ("refused", 428, "document.read", None),
        ("allowed", 200, "clinical.read", REASON["X-Avis-Reason"]),
        ("allowed", 200, "document.read", REASON["X-Avis-Reason"]),
    ]
    assert all(e["you"] for e in reads) and reads[-1]["document_id"] == document_id
    assert [e["purpose"] for e in reads[2:]] == ["break-glass", "break-glass"]
    # The patient reading their own case gives no reason; the patient never sees the reason.
    assert (await patient.get(f"/v1/cases/{case_id}/clinical")).status_code == 200
    mine = (await patient.get(f"/v1/cases/{case_id}/access-log")).json()["items"]
    assert [e["reason"] for e in mine] == [None] * len(mine)
    assert mine[-1]["you"] and mine[-1]["purpose"] == "own-case"


async def test_a_reviewer_loses_access_a_set_time_after_their_last_report(intake: Any) -> None:
    """30 days (AVIS_INTAKE_REVIEWER_ACCESS_DAYS) after the reviewer's last report, the case
    is closed to them: status, clinical content and records alike."""
    patient = intake.client()
    reviewer = intake.client(role="reviewer")
    keyring = Keyring.from_settings(intake.settings)
    now = datetime.now(UTC)
    cases = {}
    for label, completed in (("lapsed", now - timedelta(days=31)), ("recent", now)):
        case_id, document_id = await submitted(patient, "review")
        assignment = f"{case_id}-0001"
        assigned = await intake.publish(
            ReviewAssigned(
                case_id=case_id,
                assignment_id=assignment,
                reviewer_id=reviewer.sub,
                specialty="neurology",
                assigned_at=completed - timedelta(days=2),
                due_at=completed + timedelta(days=5),
            )
        )
        done = await intake.publish(
            ReviewCompleted(
                case_id=case_id,
                assignment_id=assignment,
                reviewer_id=reviewer.sub,
                specialty="neurology",
                version=1,
                completed_at=completed,
                opinion=keyring.seal(b"{}", aad="opinion"),
            )
        )
        await intake.consumed(assigned)
        await intake.consumed(done)
        cases[label] = (case_id, document_id)

    case_id, document_id = cases["recent"]
    assert (await reviewer.get(f"/v1/cases/{case_id}/clinical")).status_code == 200
    assert (await reviewer.get(f"/v1/cases/{case_id}")).status_code == 200
    case_id, document_id = cases["lapsed"]
    assert (await reviewer.get(f"/v1/cases/{case_id}/clinical")).status_code == 404
    assert (await reviewer.get(f"/v1/cases/{case_id}/documents/{document_id}")).status_code == 404
    assert (await reviewer.get(f"/v1/cases/{case_id}")).status_code == 404
    assert (await patient.get(f"/v1/cases/{case_id}/clinical")).status_code == 200
