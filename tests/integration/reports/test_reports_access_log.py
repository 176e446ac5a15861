"""Who read the report: every read of a case's report by a person, and every refusal, is one
entry of the case's access trail in reports, which its patient and coordinators read in plain
words (intake keeps the trail of the case and its records; the patient's page merges both)."""

from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from avis.reports.rules import report_id_for
from avis.shared.access_log import reader_id

pytestmark = pytest.mark.infra
# A coordinator says why they read a report's clinical content (recorded in its trail).
REASON = {"X-Avis-Reason": "quality review"}

PDF = {"Accept": "application/pdf"}


async def test_the_patient_sees_every_read_of_the_report_in_order(stack: Any) -> None:
    case = stack.new_case()
    await stack.publish(stack.submitted(case), stack.completed(case))
    await stack.ready(case)
    report = f"/v1/reports/{report_id_for(case.case_id)}"
    versions = f"/v1/cases/{case.case_id}/reports"
    trail = f"/v1/cases/{case.case_id}/access-log"

    async with stack.client(case.reviewer_id, "reviewer") as reviewer:
        assert (await reviewer.get(report, headers=PDF)).status_code == 200
        assert (await reviewer.get(trail)).status_code == 404, "a reviewer reads no trail"
    async with stack.client("coord-6", "coordinator") as hurried:
        refused = await hurried.get(report)  # the report's content: a reason first
        assert refused.status_code == 428, refused.text
        assert refused.json()["type"].endswith("/reason-required")
    async with stack.client("coord-7", "coordinator") as coordinator:
        assert (await coordinator.get(versions)).status_code == 200  # no content: no reason
        assert (await coordinator.get(versions)).status_code == 200  # the same list again
        assert (await coordinator.get(report, headers=REASON)).status_code == 200
    async with stack.client("p-staff", "partner", case.partner_id) as partner:
        assert (await partner.get(f"/v1/cases/{case.case_id}/report")).status_code == 200
    async with stack.client("patient-stranger", "patient") as stranger:
        assert (await stranger.get(report)).status_code == 404
        assert (await stranger.get(trail)).status_code == 404, "nor another patient's trail"
    async with stack.client("svc", "service") as machine:
        await machine.get(report)  # a service's machine: not a person, not in the trail

    async with stack.patient(case) as patient:
        assert (await patient.get(report)).status_code == 200
        page = await patient.get(trail)
    assert page.status_code == 200, page.text
    assert page.headers["cache-control"] == "no-store"
    entries = page.json()["items"]
    assert [(e["role"], e["action"], e["outcome"], e["purpose"]) for e in entries] == [
        ("reviewer", "report.read", "allowed", "assigned-review"),
        ("coordinator", "report.read", "refused", "coordination"),
        ("coordinator", "report.list", "allowed", "coordination"),  # listed twice: one
        ("coordinator", "report.read", "allowed", "break-glass"),
        ("partner", "report.read", "allowed", "filed-case"),
        ("patient", "report.read", "refused", "own-case"),
        ("patient", "report.read", "allowed", "own-case"),
    ]
    assert [e["seq"] for e in entries] == list(range(1, 8))
    assert entries[1]["status"] == 428
    assert "quality review" not in page.text, "the patient sees that a reason was given, not it"
    assert {e["kept_by"] for e in entries} == {"reports"}
    assert entries[0]["reader"] == reader_id(case.case_id, case.reviewer_id)
    assert entries[0]["purpose"] == "assigned-review"
    assert entries[5]["status"] == 404 and not entries[5]["you"]
    assert entries[6]["you"] and entries[6]["text"].startswith("You read the report on ")
    assert entries[0]["text"].startswith("A reviewer read the report on ")
    assert case.reviewer_id not in page.text and "coord-7" not in page.text, "pseudonymous"

    async with stack.client("coord-8", "coordinator") as coordinator:
        seen = await coordinator.get(trail, params={"limit": 2})
        assert [e["seq"] for e in seen.json()["items"]] == [1, 2]
        rest = await coordinator.get(trail, params={"cursor": seen.json()["next_cursor"]})
        assert [e["seq"] for e in rest.json()["items"]] == [3, 4, 5, 6, 7]
        assert rest.json()["items"][1]["reason"] == "quality review", "coordinators see it"

        # Exported as FHIR R4B AuditEvents for coordinators, the chain with them, no reason.
        fhir = await coordinator.get(f"{trail}/fhir")
        assert fhir.status_code == 200, fhir.text
        assert fhir.headers["content-type"].startswith("application/fhir+json")
        bundle = Bundle.model_validate(fhir.json())
        events = [AuditEvent.model_validate(e.resource.model_dump()) for e in bundle.entry or []]
        assert [(e.subtype[0].code, e.action, e.outcome) for e in events][:4] == [
            ("report.read", "R", "0"),
            ("report.read", "R", "4"),
            ("report.list", "R", "0"),
            ("report.read", "R", "0"),
        ]
        assert events[0].source.observer.display == "avis-reports"
        assert "quality review" not in fhir.text
    async with stack.patient(case) as patient:
        assert (await patient.get(f"{trail}/fhir")).status_code == 403, "coordinators only"


async def test_a_case_without_a_report_has_an_empty_trail_here(stack: Any) -> None:
    case = stack.new_case()
    trail = f"/v1/cases/{case.case_id}/access-log"
    async with stack.patient(case) as patient:
        assert (await patient.get(trail)).status_code == 404, "a case reports does not know"
        submitted = stack.submitted(case)
        await stack.publish(submitted)
        await stack.consumed(submitted)
        empty = await patient.get(trail)
        assert empty.status_code == 200 and empty.json()["items"] == []
    async with stack.client("patient-stranger", "patient") as stranger:
        assert (await stranger.get(trail)).status_code == 404
