"""Erasure by destroying the case's key (crypto-shredding), on the real store, broker and key
server: copies of intake's store and of the case's events taken before the erasure open with no
key that still exists, while another case's values, found and opened the same way, still do;
the erased case keeps its skeleton; a legal hold defers the erasure."""

import json
from typing import Any

import pytest

from avis.intake import rules
from avis.shared import topics
from avis.shared.access_log import trail_aad
from avis.shared.audit import TRAIL
from avis.shared.case_keys import CaseKeyDestroyed, CaseKeys
from avis.shared.events import CaseErased, CaseSubmitted
from avis.shared.key_usage import sealed_kids
from avis.shared.sealing import Sealed, SealingError
from tests.integration.intake.test_intake_access_log import DRAFT, filed
from tests.support.basics import MONGO_URL
from tests.support.kms import opened
from tests.support.privacy import stored_documents
from tests.support.topics import TopicReader, header

pytestmark = pytest.mark.infra

REASON = {"reason": "Demande du patient transmise par courrier"}
READ_REASON = {"X-Avis-Reason": "Controle des pieces avant l'attribution"}


def sealed_of(
    case_id: str, store: dict[str, list[dict[str, Any]]], records: list[Any]
) -> list[tuple[str, Sealed, str]]:
    """Every sealed value of a case in a copy of intake's store and in its published records:
    what it is, the value, and what it was bound to."""
    found: list[tuple[str, Sealed, str]] = []
    for doc in store.get("cases", []):
        if doc["_id"] == case_id and "content" in doc:
            found.append(("case content", Sealed(**doc["content"]), rules.case_aad(case_id)))
    for doc in store.get("documents", []):
        if doc.get("case_id") == case_id:
            aad = rules.record_aad(doc["_id"])
            found.append(("record details", Sealed(**doc["details"]), aad))
    for doc in store.get("record_chunks", []):
        if doc.get("case_id") == case_id:
            aad = rules.chunk_aad(doc["_id"])
            found.append(("record bytes", Sealed(**doc["sealed"]), aad))
    for doc in store.get(TRAIL, []):
        if doc.get("case_id") == case_id and doc.get("reason"):
            found.append(("trail's reason", Sealed(**doc["reason"]), trail_aad(case_id)))
    for record in records:
        contact = CaseSubmitted.model_validate_json(record.value or b"").contact
        found.append(("event's contact", contact, header(record, "ce_id")))
    return found


async def opens_with_a_key_that_exists(keys: CaseKeys, sealed: Sealed, aad: str) -> bool:
    """Whether any key that still exists opens the value: its case's key from the key server,
    or any key of the service's keyring."""
    try:
        (await keys.opening(sealed)).open(sealed, aad)
        return True
    except (CaseKeyDestroyed, SealingError):
        pass
    for kid in keys.keyring.kids:
        try:
            keys.keyring.open(sealed.model_copy(update={"kid": kid}), aad)
            return True
        except SealingError:
            continue
    return False


async def test_an_erased_case_opens_nowhere_while_another_still_does(intake: Any) -> None:
    tail = await TopicReader(topics.CASE_SUBMITTED).mark()
    patient, erased_id, document_id = await filed(intake)
    _, kept_id, _ = await filed(intake)
    coordinator = intake.client(role="coordinator")
    for case_id in (erased_id, kept_id):  # a read with a reason: the reason goes in the trail
        read = await coordinator.get(f"/v1/cases/{case_id}/clinical", headers=READ_REASON)
        assert read.is_success, read.text
    submitted = {
        case_id: await tail.records_for(case_id, ce_type="avis.case.submitted.v1")
        for case_id in (erased_id, kept_id)
    }
    # Copies taken before the erasure: the whole store, and the case's records on the topic.
    database = intake.settings.database
    copy = await stored_documents(MONGO_URL, database)

    asked = await patient.post(f"/v1/cases/{erased_id}/erasure-request")
    assert asked.status_code == 200, asked.text
    case = asked.json()
    assert case["erased_at"] is not None and case["documents"] == []
    assert case["status"] == "submitted" and case["reference"], "the skeleton stays"
    assert [e["kind"] for e in case["timeline"]][-2:] == ["erasure_requested", "erased"]

    # A process that never held the key: every key that still exists, and none opens.
    keys = CaseKeys.from_settings(intake.settings)
    erased = sealed_of(erased_id, copy, submitted[erased_id])
    kept = sealed_of(kept_id, copy, submitted[kept_id])
    kinds = {"case content", "record details", "record bytes", "trail's reason", "event's contact"}
    assert {what for what, _, _ in erased} == kinds == {what for what, _, _ in kept}
    assert all(s.kid.startswith("case.") for _, s, _ in erased + kept), "under the case keys"
    for what, sealed, aad in kept:
        assert await opens_with_a_key_that_exists(keys, sealed, aad), f"the other case's {what}"
    for what, sealed, aad in erased:
        assert not await opens_with_a_key_that_exists(keys, sealed, aad), f"erased {what} opens"

    # The service answers for the skeleton only; the erasure is in the trail and on the topic.
    clinical = await patient.get(f"/v1/cases/{erased_id}/clinical")
    assert clinical.status_code == 410 and clinical.json()["type"].endswith("case-erased")
    download = await patient.get(f"/v1/cases/{erased_id}/documents/{document_id}")
    assert download.status_code in (404, 410)
    [record] = await tail.records_for(erased_id, ce_type="avis.case.erased.v1")
    event = CaseErased.model_validate_json(record.value or b"")
    assert event.requested_by == "patient" and event.key_ref
    assert event.key_ref == erased[0][1].kid.removeprefix("case.")
    # The patient's address goes on, for the email that says it is done, under a key of its own.
    assert event.notice is not None and event.notice.kid != f"case.{event.key_ref}"
    notice = json.loads(await opened(intake.settings, event.notice, header(record, "ce_id")))
    assert notice["email"] == DRAFT["patient"]["email"]
    log = (await patient.get(f"/v1/cases/{erased_id}/access-log?limit=100")).json()["items"]
    assert [e["action"] for e in log][-2:] == ["case.erasure-request", "case.erase"]
    # The coordinator still sees who read, and why for the case that was not erased.
    for case_id, why in ((erased_id, None), (kept_id, READ_REASON["X-Avis-Reason"])):
        trail = (await coordinator.get(f"/v1/cases/{case_id}/access-log?limit=100")).json()
        [read] = [e for e in trail["items"] if e["purpose"] == "break-glass"]
        assert read["action"] == "clinical.read" and read["reason"] == why, read
    # Under the erased key, `avis-keys in-use` finds only the trail's reason: kept, unopenable.
    after = await stored_documents(MONGO_URL, database)
    erased_kid = erased[0][1].kid
    holding = {name for name, docs in after.items() for d in docs if erased_kid in sealed_kids(d)}
    assert holding == {TRAIL}, holding
    again = await patient.post(f"/v1/cases/{erased_id}/erasure-request")
    assert again.status_code == 200 and again.json()["erased_at"] == case["erased_at"]


async def test_a_legal_hold_defers_the_erasure_until_it_is_lifted(intake: Any) -> None:
    patient, case_id, _ = await filed(intake)
    coordinator = intake.client(role="coordinator")
    held = await coordinator.put(f"/v1/cases/{case_id}/legal-hold", json=REASON)
    assert held.status_code == 200, held.text
    assert held.json()["legal_hold"] is True and held.json()["legal_hold_since"] is not None

    asked = await patient.post(f"/v1/cases/{case_id}/erasure-request")
    assert asked.status_code == 200
    assert asked.json()["erasure_requested_at"] is not None
    assert asked.json()["erased_at"] is None and asked.json()["legal_hold"] is True
    assert (await patient.get(f"/v1/cases/{case_id}/clinical")).status_code == 200
    refused = await coordinator.post(f"/v1/cases/{case_id}/erasure", json=REASON)
    assert refused.status_code == 409 and "legal hold" in refused.json()["detail"]

    lifted = await coordinator.post(f"/v1/cases/{case_id}/legal-hold/release", json=REASON)
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["legal_hold"] is False and lifted.json()["erased_at"] is not None
    assert lifted.json()["legal_hold_since"] is None
    assert (await patient.get(f"/v1/cases/{case_id}/clinical")).status_code == 410


async def test_a_coordinator_erases_with_a_reason_and_nobody_else_may(intake: Any) -> None:
    patient, case_id, _ = await filed(intake)
    path = f"/v1/cases/{case_id}/erasure"
    assert (await patient.post(path, json=REASON)).status_code == 403
    assert (await intake.client(role="coordinator").post(path, json={})).status_code == 422
    erased = await intake.client(role="coordinator").post(path, json=REASON)
    assert erased.status_code == 200, erased.text
    assert erased.json()["erased_at"] is not None
    assert (await patient.get(f"/v1/cases/{case_id}/clinical")).status_code == 410
