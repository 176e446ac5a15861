"""Who reads which report: a reviewer reads it pseudonymised (no name, an age instead of the
birth date) in every format, until a set time after their last opinion; the patient,
coordinators and a consenting partner read it whole."""

import hashlib
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from avis.reports.rules import report_id_for
from avis.shared.envelope import Event
from avis.shared.events import CaseClaimed, ReviewCompleted

pytestmark = pytest.mark.infra
# A coordinator says why they read a report's clinical content (recorded in its trail).
REASON = {"X-Avis-Reason": "quality review"}

FHIR = {"Accept": "application/fhir+json"}
PDF = {"Accept": "application/pdf"}


def age_today(born: date) -> int:
    """Whole years since `born` (the report was issued today)."""
    today = date.today()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


async def test_a_reviewer_reads_a_pseudonymised_report(stack: Any) -> None:
    case = stack.new_case(given_name="Ambroise", family_name="Vasseur-Lenoir")
    await stack.publish(stack.submitted(case), stack.completed(case))
    await stack.ready(case)
    path = f"/v1/reports/{report_id_for(case.case_id)}"
    contact = case.contact

    async with stack.client(case.reviewer_id, "reviewer") as reviewer:
        read = await reviewer.get(path)
        assert read.status_code == 200, read.text
        patient = read.json()["patient"]
        assert "Ambroise" not in read.text and "Vasseur" not in read.text
        assert contact.birth_date.isoformat() not in read.text
        assert patient["given_name"] is None and patient["family_name"] is None
        assert patient["birth_date"] is None and patient["birth_date_text"] is None
        assert patient["age_years"] == age_today(contact.birth_date)
        assert read.json()["reference"] in patient["name"]
        fhir = await reviewer.get(path, headers=FHIR)
        assert fhir.status_code == 200
        assert "Vasseur" not in fhir.text and "birthDate" not in fhir.text
        pdf = await reviewer.get(path, headers=PDF)
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
        # its tag is no digest of the PDF, which the store would keep beside it
        assert hashlib.sha256(pdf.content).hexdigest()[:32] not in pdf.headers["etag"]

    readers = [
        stack.patient(case),
        stack.client("coord-1", "coordinator", **REASON),
        stack.client("p-staff", "partner", case.partner_id),
    ]
    for client in readers:
        async with client:
            whole = (await client.get(path)).json()["patient"]
            assert whole["name"] == "Ambroise Vasseur-Lenoir"
            assert whole["birth_date"] == contact.birth_date.isoformat()
            assert "Vasseur" in (await client.get(path, headers=FHIR)).text
            full_pdf = await client.get(path, headers=PDF)
            assert full_pdf.headers["etag"] != pdf.headers["etag"], "not the reviewer's PDF"


async def test_a_reviewer_loses_access_a_set_time_after_their_last_opinion(stack: Any) -> None:
    """30 days (AVIS_REPORTS_REVIEWER_ACCESS_DAYS) after the reviewer's last opinion version,
    its report is closed to them; the patient keeps it."""
    case = stack.new_case()
    sent = stack.completed(case)
    old = datetime.now(UTC) - timedelta(days=31)
    payload = ReviewCompleted.model_validate(sent.data).model_copy(update={"completed_at": old})
    await stack.publish(stack.submitted(case), Event.new(payload, sent.source, event_id=sent.id))
    await stack.ready(case)
    path = f"/v1/cases/{case.case_id}/report"
    async with stack.client(case.reviewer_id, "reviewer") as reviewer:
        assert (await reviewer.get(path)).status_code == 404
        assert (await reviewer.get(f"/v1/cases/{case.case_id}/reports")).status_code == 404
    async with stack.patient(case) as patient:
        assert (await patient.get(path)).status_code == 200


async def test_the_patient_who_claims_a_partner_filed_case_reads_its_report(stack: Any) -> None:
    case = stack.new_case(by_partner=True)
    claimant = f"patient-{case.case_id}"
    claimed = Event.new(
        CaseClaimed(case_id=case.case_id, patient_id=claimant, claimed_at=datetime.now(UTC)),
        "/avis/intake",
    )
    await stack.publish(stack.submitted(case), stack.completed(case))
    await stack.ready(case)
    path = f"/v1/reports/{report_id_for(case.case_id)}"
    async with stack.client(claimant, "patient") as patient:
        assert (await patient.get(path)).status_code == 404, "nobody's report before the claim"
        await stack.publish(claimed)
        await stack.consumed(claimed)
        assert (await patient.get(path)).status_code == 200
    second = Event.new(
        CaseClaimed(case_id=case.case_id, patient_id="patient-late", claimed_at=datetime.now(UTC)),
        "/avis/intake",
    )
    await stack.publish(second)
    await stack.consumed(second)
    async with stack.client("patient-late", "patient") as late:
        assert (await late.get(path)).status_code == 404, "a case is claimed once"
