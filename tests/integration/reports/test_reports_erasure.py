"""Each case's data in reports is sealed under the case's own key (in the test stack's key
server), and erasing the case (its key destroyed, then `avis.case.erased.v1`) leaves nothing of
its report: the report answers 410, its versions and their PDFs are gone, and another case still
opens."""

from typing import Any

import httpx
import pytest

from avis.reports.rules import contact_aad, opinion_aad, pdf_aad, report_aad, version_key
from avis.shared.audit import TRAIL
from avis.shared.case_keys import case_kid
from avis.shared.problems import PROBLEM_MEDIA_TYPE
from avis.shared.sealing import Sealed, SealingError
from tests.support.basics import eventually
from tests.support.reports import Case, ReportsStack

pytestmark = pytest.mark.infra

PDF = {"Accept": "application/pdf"}
WHY = {"X-Avis-Reason": "quality review"}


async def _reported(stack: ReportsStack, case: Case) -> str:
    """Publish the case and its opinion; wait for its report and its PDF, rendered and kept;
    the version's key."""
    await stack.publish(stack.submitted(case), stack.completed(case))
    (ready,) = await stack.ready(case)
    async with stack.patient(case) as patient:
        url = f"/v1/cases/{case.case_id}/report"
        assert (await patient.get(url, headers=PDF)).status_code == 200
    key = version_key(ready["report_id"], 1)
    await eventually(lambda: stack.db["versions"].find_one({"_id": key, "pdf": {"$exists": 1}}))
    return key


def _sealed(value: dict[str, Any]) -> Sealed:
    return Sealed.model_validate(value)


def _assert_erased(response: httpx.Response) -> None:
    assert response.status_code == 410, response.text[:200]
    assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    assert response.json()["type"].endswith("/case-erased")


async def test_a_cases_values_are_sealed_under_its_own_key(stack: ReportsStack) -> None:
    case = await stack.keyed(stack.new_case())
    assert case.ring is not None and case.key_ref is not None
    key = await _reported(stack, case)

    doc = await stack.db["cases"].find_one({"_id": case.case_id})
    version = await stack.db["versions"].find_one({"_id": key})
    assert doc is not None and version is not None
    assert doc["key_ref"] == case.key_ref
    stored = {
        "contact": (doc["case"]["contact"], contact_aad(case.case_id)),
        "opinion": (doc["opinions"][0]["sealed"], opinion_aad(case.case_id, 1)),
        "report": (version["report"], report_aad(key)),
        "pdf": (version["pdf"]["sealed"], pdf_aad(key)),
    }
    for what, (raw, aad) in stored.items():
        sealed = _sealed(raw)
        assert sealed.kid == case_kid(case.key_ref), what
        assert case.ring.open(sealed, aad), what  # the case's key opens it
        with pytest.raises(SealingError):
            stack.keyring.open(sealed, aad)  # the service's keyring alone does not


async def test_an_erased_cases_report_is_gone_and_another_case_still_opens(
    stack: ReportsStack,
) -> None:
    erased, kept = stack.new_case(), stack.new_case()
    for case in (erased, kept):
        await stack.keyed(case)
    erased_key = await _reported(stack, erased)
    kept_key = await _reported(stack, kept)
    async with stack.client("coord-1", "coordinator") as coordinator:
        for case in (erased, kept):  # a read with a reason: the reason goes in the trail
            url = f"/v1/cases/{case.case_id}/report"
            assert (await coordinator.get(url, headers=WHY)).status_code == 200
    reasons = [d["reason"] async for d in stack.db[TRAIL].find() if d.get("reason")]
    assert {r["kid"] for r in reasons} >= {case_kid(erased.key_ref), case_kid(kept.key_ref)}

    await stack.keys.destroy(erased.key_ref)  # intake destroys the key, then says so
    event = stack.erased(erased)
    await stack.publish(event)
    await stack.consumed(event)

    async with stack.patient(erased) as patient:
        _assert_erased(await patient.get(f"/v1/cases/{erased.case_id}/report"))
        _assert_erased(await patient.get(f"/v1/cases/{erased.case_id}/report", headers=PDF))
        _assert_erased(await patient.get(f"/v1/cases/{erased.case_id}/reports"))
    async with stack.client("stranger", "patient") as stranger:
        # Who may not read it learns nothing more than before.
        url = f"/v1/cases/{erased.case_id}/report"
        assert (await stranger.get(url)).status_code == 404
    assert await stack.db["versions"].find_one({"_id": erased_key}) is None, "its PDF is kept"
    doc = await stack.db["cases"].find_one({"_id": erased.case_id})
    assert doc is not None and doc["erased_at"] is not None
    assert "contact" not in doc["case"] and "opinions" not in doc
    assert [v["version"] for v in doc["versions"]] == [1]  # ids and times stay
    assert doc["case"]["reference"] and doc["key_ref"] == erased.key_ref

    async with stack.patient(kept) as patient:
        read = await patient.get(f"/v1/cases/{kept.case_id}/report")
        assert read.status_code == 200
        assert read.json()["patient"]["family_name"] == kept.contact.family_name
        pdf = await patient.get(f"/v1/cases/{kept.case_id}/report", headers=PDF)
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert await stack.db["versions"].find_one({"_id": kept_key}) is not None
    async with stack.client("coord-1", "coordinator") as coordinator:
        # Who read stays in the trail; why, only for the case that was not erased.
        for case, why in ((erased, None), (kept, WHY["X-Avis-Reason"])):
            trail = await coordinator.get(f"/v1/cases/{case.case_id}/access-log")
            [read] = [e for e in trail.json()["items"] if e["purpose"] == "break-glass"]
            assert read["action"] == "report.read" and read["reason"] == why, read


async def test_a_key_found_destroyed_in_a_read_answers_410_not_500(stack: ReportsStack) -> None:
    case = await stack.keyed(stack.new_case())
    await _reported(stack, case)
    # The key destroyed, and this copy's cached key dropped, before the erasure reaches reports.
    await stack.keys.destroy(case.key_ref)
    stack.reports.keys.forget(case.key_ref)

    async with stack.patient(case) as patient:
        _assert_erased(await patient.get(f"/v1/cases/{case.case_id}/report"))
