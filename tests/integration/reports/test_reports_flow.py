"""Events in, report out, on the real broker and store: the case and its opinion in either
order, redeliveries, corrections, withdrawals, and who may read what comes out."""

import json
import re
from typing import Any

import pytest

from avis.reports.rules import report_id_for
from avis.shared.events import Language
from tests.support.fhir import violations
from tests.support.reports import Case, ReportsStack

pytestmark = pytest.mark.infra
# A coordinator says why they read a report's clinical content (recorded in its trail).
REASON = {"X-Avis-Reason": "quality review"}

CLEAR_TEXT = ["Camille", "Martin", "1971-03-14", "nodule", "lobectomie", "TEP-scanner"]


async def issued(stack: ReportsStack, case: Case) -> dict[str, Any]:
    """Publish the case and its opinion; return the first `report-ready` payload."""
    await stack.publish(stack.submitted(case), stack.completed(case))
    (ready,) = await stack.ready(case)
    return ready


async def test_a_submitted_case_and_its_opinion_make_a_report(stack: ReportsStack) -> None:
    case = stack.new_case(Language.FR)
    ready = await issued(stack, case)
    report_id = report_id_for(case.case_id)
    assert ready["report_id"] == report_id and ready["version"] == 1
    assert ready["languages"] == ["fr"] and set(ready["formats"]) == {"json", "pdf", "fhir"}
    assert ready["report_url"] == f"http://reports.test/v1/reports/{report_id}?version=1"
    (record,) = stack.log.of(case.case_id, "avis.report.ready.v1")
    published = (record.value or b"") + b"".join(v for _, v in record.headers)
    for text in CLEAR_TEXT:
        assert text.encode() not in published, f"{text} travelled in report-ready"

    async with stack.patient(case) as patient:
        latest = await patient.get(f"/v1/cases/{case.case_id}/report")
        assert latest.status_code == 200, latest.text
        assert latest.headers["content-type"] == "application/json"
        report = latest.json()
        assert report["version"] == 1 and report["language"] == "fr"
        assert report["patient"]["name"] == "Camille Martin"
        assert report["patient"]["birth_date_text"] == "14 mars 1971"
        assert [q["code"] for q in report["questions"]] == [
            "diagnosis_clarification",
            "further_tests",
        ]
        assert report["sections"][0]["heading"] == "Le diagnostic"
        assert report["reviewer"]["name"] == "Dr Claire Fontaine"
        by_id = await patient.get(f"/v1/reports/{report_id}")
        assert by_id.json() == report

        fhir = await patient.get(
            f"/v1/reports/{report_id}", headers={"Accept": "application/fhir+json"}
        )
        assert fhir.status_code == 200
        assert fhir.headers["content-type"] == "application/fhir+json"
        assert violations(fhir.json()) == []

        pdf = await patient.get(f"/v1/reports/{report_id}", headers={"Accept": "application/pdf"})
        assert pdf.status_code == 200
        assert pdf.headers["content-type"] == "application/pdf"
        assert pdf.content.startswith(b"%PDF-")
        etag = pdf.headers["etag"]
        again = await patient.get(
            f"/v1/reports/{report_id}",
            headers={"Accept": "application/pdf", "If-None-Match": etag},
        )
        assert again.status_code == 304 and again.headers["etag"] == etag and not again.content
        stale = await patient.get(
            f"/v1/reports/{report_id}",
            headers={"Accept": "application/pdf", "If-None-Match": '"stale"'},
        )
        assert stale.status_code == 200 and stale.content == pdf.content

        refused = await patient.get(f"/v1/reports/{report_id}", headers={"Accept": "text/html"})
        assert refused.status_code == 406
        assert refused.headers["content-type"] == "application/problem+json"


async def test_an_opinion_before_its_case_waits_parked_and_blocks_nothing(
    stack: ReportsStack,
) -> None:
    early = stack.new_case(Language.EN)
    completed = stack.completed(early)
    await stack.publish(completed)
    await stack.consumed(completed)  # acknowledged: the partition is not held
    # Another case, behind on the same topics, goes through meanwhile.
    other = stack.new_case(Language.EN)
    await issued(stack, other)
    assert stack.log.of(early.case_id) == []
    stored = await stack.db["cases"].find_one({"_id": early.case_id})
    assert stored is not None and [o["version"] for o in stored["opinions"]] == [1]

    await stack.publish(stack.submitted(early))
    (ready,) = await stack.ready(early)
    assert ready["version"] == 1
    async with stack.patient(early) as patient:
        report = (await patient.get(f"/v1/cases/{early.case_id}/report")).json()
    assert report["language"] == "en" and report["title"] == "Second medical opinion report"


async def test_a_redelivered_event_makes_nothing_new(stack: ReportsStack) -> None:
    case = stack.new_case()
    submitted, completed = stack.submitted(case), stack.completed(case)
    await stack.publish(submitted, completed)
    await stack.ready(case)
    # The same events again (same ce_id), and the same opinion version under a new event id.
    again = stack.completed(case)
    await stack.publish(submitted, completed, again)
    await stack.consumed(again)
    marker = stack.new_case()
    await issued(stack, marker)  # what came after our events is out: so would theirs be
    assert len(stack.log.of(case.case_id, "avis.report.ready.v1")) == 1
    async with stack.patient(case) as patient:
        page = (await patient.get(f"/v1/cases/{case.case_id}/reports")).json()
    assert [v["version"] for v in page["items"]] == [1]
    assert await stack.db["versions"].count_documents({"case_id": case.case_id}) == 1


async def test_a_correction_makes_version_2_and_keeps_version_1(stack: ReportsStack) -> None:
    case = stack.new_case()
    await issued(stack, case)
    corrected = {"assessment": "revised", "explanation": "Après relecture : lésion bénigne."}
    await stack.publish(stack.completed(case, 2, seq=7, diagnosis=corrected))
    ready = await stack.ready(case, 2)
    assert [r["version"] for r in ready] == [1, 2]
    # Each report goes out with the case's sequence number of its opinion (0: none given).
    assert [r["seq"] for r in ready] == [0, 7]
    report_id = report_id_for(case.case_id)
    async with stack.patient(case) as patient:
        latest = (await patient.get(f"/v1/cases/{case.case_id}/report")).json()
        first = (await patient.get(f"/v1/reports/{report_id}", params={"version": 1})).json()
        second = (await patient.get(f"/v1/reports/{report_id}", params={"version": 2})).json()
        listing = (await patient.get(f"/v1/cases/{case.case_id}/reports")).json()
        paged = (await patient.get(f"/v1/cases/{case.case_id}/reports?limit=1")).json()
        rest = await patient.get(
            f"/v1/cases/{case.case_id}/reports", params={"limit": 1, "cursor": paged["next_cursor"]}
        )
        missing = await patient.get(f"/v1/reports/{report_id}", params={"version": 3})
    assert latest == second
    assert second["version"] == 2 and second["sections"][0]["assessment"] == "revised"
    assert "version 1" in second["correction_note"]
    assert first["version"] == 1 and first["sections"][0]["assessment"] == "clarified"
    assert [v["version"] for v in listing["items"]] == [2, 1]
    assert [v["version"] for v in paged["items"]] == [2] and paged["next_cursor"] == "2"
    assert [v["version"] for v in rest.json()["items"]] == [1]
    assert rest.json()["next_cursor"] is None
    assert missing.status_code == 404


async def test_a_case_withdrawn_before_its_report_gets_none(stack: ReportsStack) -> None:
    # Topics have no order between them: each withdrawal is in before the opinion is sent.
    case = stack.new_case()
    completed, withdrawal = stack.completed(case), stack.withdrawn(case)
    await stack.publish(stack.submitted(case), withdrawal)
    await stack.consumed(withdrawal)
    await stack.publish(completed)
    await stack.consumed(completed)
    # And withdrawn before anything reached us: a tombstone keeps the later events out.
    ghost = stack.new_case()
    ghost_completed, ghost_withdrawal = stack.completed(ghost), stack.withdrawn(ghost)
    await stack.publish(ghost_withdrawal)
    await stack.consumed(ghost_withdrawal)
    await stack.publish(stack.submitted(ghost), ghost_completed)
    await stack.consumed(ghost_completed)
    await issued(stack, stack.new_case())
    for withdrawn in (case, ghost):
        assert stack.log.of(withdrawn.case_id, "avis.report.ready.v1") == []
        async with stack.client("coord", "coordinator", **REASON) as coordinator:
            response = await coordinator.get(f"/v1/cases/{withdrawn.case_id}/report")
        assert response.status_code == 404
        stored = await stack.db["cases"].find_one({"_id": withdrawn.case_id})
        assert stored is not None and stored["withdrawn_at"] is not None
        # What a report would have needed is not kept once it will never be written.
        assert "contact" not in (stored.get("case") or {}) and not stored.get("opinions")


async def test_a_report_issued_before_the_withdrawal_stays_readable(stack: ReportsStack) -> None:
    case = stack.new_case()
    await issued(stack, case)
    withdrawal = stack.withdrawn(case)
    late = stack.completed(case, 2)
    await stack.publish(withdrawal)
    await stack.consumed(withdrawal)
    await stack.publish(late)
    await stack.consumed(late)
    async with stack.patient(case) as patient:
        response = await patient.get(f"/v1/cases/{case.case_id}/report")
    assert response.status_code == 200 and response.json()["version"] == 1
    assert len(stack.log.of(case.case_id, "avis.report.ready.v1")) == 1


async def test_only_its_readers_see_a_report_and_everyone_else_gets_the_same_404(
    stack: ReportsStack,
) -> None:
    case = stack.new_case(share=True)
    await issued(stack, case)
    unshared = stack.new_case(share=False)
    await issued(stack, unshared)
    report_id = report_id_for(case.case_id)
    assert case.patient_id and case.partner_id and unshared.partner_id
    readers = [
        stack.client(case.patient_id, "patient"),
        stack.client("p-staff", "partner", case.partner_id),
        stack.client(case.reviewer_id, "reviewer"),
        stack.client("coord-1", "coordinator", **REASON),
    ]
    strangers = [
        stack.client("someone-else", "patient"),
        stack.client("p-other", "partner", "another-partner"),
        stack.client("another-reviewer", "reviewer"),
        stack.client(case.patient_id, "service"),
    ]
    paths = [
        f"/v1/cases/{case.case_id}/report",
        f"/v1/reports/{report_id}",
        f"/v1/cases/{case.case_id}/reports",
    ]
    nowhere = [
        "/v1/cases/00000000-0000-4000-8000-000000000000/report",
        "/v1/reports/00000000-0000-4000-8000-000000000000",
        "/v1/cases/00000000-0000-4000-8000-000000000000/reports",
    ]
    for client in readers:
        async with client:
            for path in paths:
                assert (await client.get(path)).status_code == 200, (client.headers, path)
    for client in strangers:
        async with client:
            for path, absent in zip(paths, nowhere, strict=True):
                denied, missing = await client.get(path), await client.get(absent)
                assert denied.status_code == missing.status_code == 404
                assert _same_problem(denied.json(), missing.json())
    # Without the patient's consent to share, the partner that filed it does not read it.
    async with stack.client("p-staff", "partner", unshared.partner_id) as partner:
        assert (await partner.get(f"/v1/cases/{unshared.case_id}/report")).status_code == 404
    async with stack.client(case.patient_id, "patient") as patient:
        anonymous = await patient.get(paths[0], headers={"Authorization": ""})
    assert anonymous.status_code == 401


def _same_problem(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def strip(p: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in p.items() if k != "instance"}

    return strip(a) == strip(b)


async def test_what_reports_keeps_is_sealed_at_rest(stack: ReportsStack) -> None:
    case = stack.new_case()
    ready = await issued(stack, case)
    async with stack.patient(case) as patient:
        pdf = await patient.get(
            ready["report_url"].replace("http://reports.test", ""),
            headers={"Accept": "application/pdf"},
        )
    assert pdf.status_code == 200
    key = f"{ready['report_id']}:v1"
    version = await stack.db["versions"].find_one({"_id": key})
    assert version is not None and version["pdf"]["etag"] == pdf.headers["etag"]
    stored = [
        await stack.db["cases"].find_one({"_id": case.case_id}),
        version,
        await stack.db["report_ids"].find_one({"_id": ready["report_id"]}),
    ]
    dump = json.dumps(stored, default=str)
    for text in [*CLEAR_TEXT, "Fontaine", "Le diagnostic", "mars 1971"]:
        assert not re.search(re.escape(text), dump, re.IGNORECASE), f"{text} kept in clear"
    assert version["report"]["alg"] == "A256GCM" and version["pdf"]["sealed"]["alg"] == "A256GCM"
