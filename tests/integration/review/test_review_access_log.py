"""Who read or wrote the opinion: every read and write of a case's opinions and decline reasons by
a person, and every refused read of its opinion, is one entry of the case's access trail in
review, which coordinators and the case's patient read in plain words (intake keeps the trail of
the case and its records, reports the report's; the patient's page merges the three).

Each test uses a specialty of its own, so the reviewers of one test are never candidates for the
cases of another in this module's database.
"""

from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from avis.shared.access_log import reader_id
from avis.shared.audit import TRAIL
from avis.shared.case_keys import CaseKeys, case_kid
from tests.support import kms
from tests.support.basics import eventually, publish, unique
from tests.support.review import ReviewStack

pytestmark = pytest.mark.infra

ASSIGNED = "avis.review.assigned.v1"
# A coordinator says why they read the opinion, clinical content (recorded in its trail).
REASON = {"X-Avis-Reason": "second look at a complaint"}


def opinion(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "diagnosis": {
            "assessment": "confirmed",
            "explanation": "The echocardiogram fits a dilated cardiomyopathy.",
        },
        "imaging_and_lab_review": "Ejection fraction 35 %; NT-proBNP raised.",
        "alternative_pathways": "None better than the current plan.",
        "risk_benefit": "The proposed treatment's benefits outweigh its risks.",
        "further_tests": "A cardiac MRI within three months.",
        "summary_for_patient": "Your doctors' diagnosis is right.",
    }
    body.update(changes)
    return body


def said(page: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(e["role"], e["action"], e["outcome"], e["purpose"]) for e in page["items"]]


async def assigned_case(stack: ReviewStack, specialty: str, patient: str | None) -> str:
    """A case filed by `patient` (or, without one, by a partner) and assigned; its id."""
    submitted = stack.case_event(specialty, patient_id=patient)
    await publish(stack.publisher, submitted)
    await stack.log.wait(submitted.subject, ASSIGNED)
    return submitted.subject


async def test_the_patient_sees_every_read_and_write_of_the_opinion_in_order(
    stack: ReviewStack,
) -> None:
    p = unique("cardio")
    await stack.add_reviewer(f"{p}-1", ["cardiology"], ["fr"], capacity=1)
    patient = unique("patient")
    case_id = await assigned_case(stack, "cardiology", patient)
    url = f"/v1/assignments/{(await stack.assignment(case_id))['id']}"
    trail = f"/v1/cases/{case_id}/access-log"

    async with stack.client(f"{p}-1", "reviewer") as reviewer:
        assert (await reviewer.post(f"{url}/accept")).status_code == 200
        assert (await reviewer.post(f"{url}/opinion", json=opinion())).status_code == 201
        replay = await reviewer.post(f"{url}/opinion", json=opinion())
        assert replay.status_code == 200, "the same opinion again writes nothing: no entry"
        assert (await reviewer.get(f"{url}/opinion")).status_code == 200
        assert (await reviewer.get(f"{url}/opinion")).status_code == 200, "read again: folded"
        corrected = await reviewer.put(f"{url}/opinion", json=opinion(further_tests="None."))
        assert corrected.status_code == 200, corrected.text
        assert (await reviewer.get(trail)).status_code == 404, "a reviewer reads no trail"
    async with stack.client(f"{p}-other", "reviewer") as stranger:
        assert (await stranger.get(f"{url}/opinion")).status_code == 403
    async with stack.client("coord-hurried", "coordinator") as hurried:
        refused = await hurried.get(f"{url}/opinion")  # clinical content: a reason first
        assert refused.status_code == 428, refused.text
        assert refused.json()["type"].endswith("/reason-required")
    async with stack.client("coord-2", "coordinator") as coordinator:
        read = await coordinator.get(f"{url}/opinion", params={"version": 1}, headers=REASON)
        assert read.status_code == 200, read.text
    async with stack.client("svc", "service") as machine:
        await machine.get(f"{url}/opinion")  # a service's machine: not a person, no entry
    async with stack.client("patient-stranger", "patient") as other:
        assert (await other.get(trail)).status_code == 404, "nor another patient's trail"

    async with stack.client(patient, "patient") as owner:
        page = await owner.get(trail)
        assert page.status_code == 200, page.text
        assert (await owner.get(f"{trail}/fhir")).status_code == 403, "coordinators only"
    assert page.headers["cache-control"] == "no-store"
    entries = page.json()["items"]
    assert said(page.json()) == [
        ("reviewer", "opinion.create", "allowed", "assigned-review"),
        ("reviewer", "opinion.read", "allowed", "assigned-review"),  # read twice: one
        ("reviewer", "opinion.correct", "allowed", "assigned-review"),
        ("reviewer", "opinion.read", "refused", "assigned-review"),
        ("coordinator", "opinion.read", "refused", "coordination"),
        ("coordinator", "opinion.read", "allowed", "break-glass"),
    ]
    assert [e["seq"] for e in entries] == list(range(1, 7))
    assert [e["status"] for e in entries][3:5] == [403, 428]
    assert {e["kept_by"] for e in entries} == {"review"}
    assert entries[0]["reader"] == reader_id(case_id, f"{p}-1")
    assert entries[0]["text"].startswith("A reviewer wrote the specialist's opinion on ")
    assert not any(e["you"] for e in entries)
    assert "second look" not in page.text, "the patient sees that a reason was given, not it"
    assert f"{p}-1" not in page.text and "coord-2" not in page.text, "pseudonymous"

    async with stack.client("coord-3", "coordinator") as coordinator:
        seen = await coordinator.get(trail, params={"limit": 2})
        assert [e["seq"] for e in seen.json()["items"]] == [1, 2]
        rest = await coordinator.get(trail, params={"cursor": seen.json()["next_cursor"]})
        assert [e["seq"] for e in rest.json()["items"]] == [3, 4, 5, 6]
        assert rest.json()["items"][3]["reason"] == REASON["X-Avis-Reason"], "coordinators see it"

        # Exported as FHIR R4B AuditEvents for coordinators, the chain with them, no reason.
        fhir = await coordinator.get(f"{trail}/fhir")
        assert fhir.status_code == 200, fhir.text
        assert fhir.headers["content-type"].startswith("application/fhir+json")
        bundle = Bundle.model_validate(fhir.json())
        events = [AuditEvent.model_validate(e.resource.model_dump()) for e in bundle.entry or []]
        assert [(e.subtype[0].code, e.action, e.outcome) for e in events] == [
            ("opinion.create", "C", "0"),
            ("opinion.read", "R", "0"),
            ("opinion.correct", "U", "0"),
            ("opinion.read", "R", "4"),
            ("opinion.read", "R", "4"),
            ("opinion.read", "R", "0"),
        ]
        assert events[0].source.observer.display == "avis-review"
        assert "second look" not in fhir.text


async def test_a_coordinators_read_for_a_reason_is_never_folded(stack: ReviewStack) -> None:
    p = unique("neuro")
    await stack.add_reviewer(f"{p}-1", ["neurology"], ["fr"], capacity=1)
    case_id = await assigned_case(stack, "neurology", unique("patient"))
    url = f"/v1/assignments/{(await stack.assignment(case_id))['id']}"
    async with stack.client(f"{p}-1", "reviewer") as reviewer:
        assert (await reviewer.post(f"{url}/accept")).status_code == 200
        assert (await reviewer.post(f"{url}/opinion", json=opinion())).status_code == 201
    async with stack.client("coord-4", "coordinator") as coordinator:
        for why in ("a complaint", "an audit"):
            read = await coordinator.get(f"{url}/opinion", headers={"X-Avis-Reason": why})
            assert read.status_code == 200, read.text
        page = (await coordinator.get(f"/v1/cases/{case_id}/access-log")).json()
    assert said(page) == [
        ("reviewer", "opinion.create", "allowed", "assigned-review"),
        ("coordinator", "opinion.read", "allowed", "break-glass"),
        ("coordinator", "opinion.read", "allowed", "break-glass"),  # each reason its own entry
    ]
    assert [e["reason"] for e in page["items"]][1:] == ["a complaint", "an audit"]


async def test_a_reason_is_sealed_under_the_cases_key_and_erased_with_it(
    stack: ReviewStack,
) -> None:
    keys = CaseKeys.from_settings(stack.settings)
    case_id = unique("case")
    key_ref = await keys.create(case_id)
    assert key_ref is not None, "the test stack has a key server"
    p = unique("endo")
    await stack.add_reviewer(f"{p}-1", ["endocrinology"], ["fr"], capacity=1)
    event = stack.case_event("endocrinology", case_id=case_id, patient_id=p, key_ref=key_ref)
    await publish(stack.publisher, event)
    await stack.log.wait(case_id, ASSIGNED)
    url = f"/v1/assignments/{(await stack.assignment(case_id))['id']}"
    async with stack.client(f"{p}-1", "reviewer") as reviewer:
        assert (await reviewer.post(f"{url}/accept")).status_code == 200
        assert (await reviewer.post(f"{url}/opinion", json=opinion())).status_code == 201
    async with stack.client("coord-5", "coordinator") as coordinator:
        assert (await coordinator.get(f"{url}/opinion", headers=REASON)).status_code == 200
        stored = [d async for d in stack.db[TRAIL].find({"case_id": case_id}) if d.get("reason")]
        assert [d["reason"]["kid"] for d in stored] == [case_kid(key_ref)]

        await keys.destroy(key_ref)  # intake destroys the key, then says so
        await publish(stack.publisher, kms.erased_event(case_id, key_ref))

        async def erased() -> bool:
            doc = await stack.db["cases"].find_one({"_id": case_id})
            return doc is not None and doc.get("erased_at") is not None

        await eventually(erased)
        page = (await coordinator.get(f"/v1/cases/{case_id}/access-log")).json()
    [read] = [e for e in page["items"] if e["purpose"] == "break-glass"]
    assert read["action"] == "opinion.read" and read["reason"] is None, "withheld once erased"


async def test_a_decline_and_each_read_of_its_reason_are_in_the_trail(stack: ReviewStack) -> None:
    p = unique("derma")
    await stack.add_reviewer(f"{p}-1", ["dermatology"], ["fr"], capacity=1)
    await stack.add_reviewer(f"{p}-2", ["dermatology"], ["fr"], capacity=1)
    case_id = await assigned_case(stack, "dermatology", unique("patient"))
    first = await stack.assignment(case_id)
    declined = {"reason_code": "conflict_of_interest", "reason": "I treated the patient's sister"}
    async with stack.client(first["reviewer_id"], "reviewer") as reviewer:
        url = f"/v1/assignments/{first['id']}"
        answer = await reviewer.post(f"{url}/decline", json=declined)
        assert answer.status_code == 200, answer.text
        assert (await reviewer.post(f"{url}/decline", json=declined)).status_code == 200
        own = await reviewer.get(url)  # the reviewer is not shown the reason back: no read
        assert own.status_code == 200 and own.json()["decline_reason"] is None
    await stack.log.wait(case_id, ASSIGNED, count=2)
    async with stack.client("coord-5", "coordinator") as coordinator:
        # A list's rows (the board's) hold neither the reason nor the rationale: no read.
        rows = await coordinator.get("/v1/assignments", params={"case_id": case_id, "brief": 1})
        assert rows.status_code == 200 and len(rows.json()["items"]) == 2, rows.text
        assert declined["reason"] not in rows.text and '"rationale":null' in rows.text
        assert said((await coordinator.get(f"/v1/cases/{case_id}/access-log")).json()) == [
            ("reviewer", "review.decline", "allowed", "assigned-review")
        ]
        listed = await coordinator.get("/v1/assignments", params={"case_id": case_id})
        assert declined["reason"] in listed.text
        one = await coordinator.get(f"/v1/assignments/{first['id']}")
        assert one.json()["decline_reason"] == declined["reason"]  # again, within the window
        page = (await coordinator.get(f"/v1/cases/{case_id}/access-log")).json()
    assert said(page) == [
        ("reviewer", "review.decline", "allowed", "assigned-review"),  # declined twice: one
        ("coordinator", "decline.read", "allowed", "coordination"),  # read twice: one
    ]
    assert declined["reason"] not in str(page), "the trail says a reason was read, not it"


async def test_the_patient_of_a_partner_filed_case_reads_its_trail_once_claimed(
    stack: ReviewStack,
) -> None:
    await stack.add_reviewer(unique("nephro"), ["nephrology"], ["fr"], capacity=1)
    case_id = await assigned_case(stack, "nephrology", None)
    trail = f"/v1/cases/{case_id}/access-log"
    patient = unique("patient")
    async with stack.client(patient, "patient") as owner:
        assert (await owner.get(trail)).status_code == 404, "not theirs until claimed"
        await stack.consumed(await stack.claim(case_id, patient))
        claimed = await owner.get(trail)
        assert claimed.status_code == 200 and claimed.json()["items"] == []
    async with stack.client("patient-stranger", "patient") as stranger:
        assert (await stranger.get(trail)).status_code == 404
    async with stack.client("coord-6", "coordinator") as coordinator:
        assert (await coordinator.get(trail)).status_code == 200
        unknown = await coordinator.get(f"/v1/cases/{unique('case')}/access-log")
        assert unknown.status_code == 404, "a case review does not know"
