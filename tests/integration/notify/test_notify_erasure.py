"""Notify keeps a case's contact and claim secret sealed under the case's own key (in the test
stack's key server); once the case is erased (its key destroyed, then `avis.case.erased.v1`),
its queued email is cancelled and never sent, nothing more is sent for it, and another case's
emails still go out."""

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from avis.notify.store import SendDoc, claim_aad, contact_aad
from avis.shared.case_keys import case_kid
from avis.shared.envelope import Event
from avis.shared.events import CaseSubmitted, ClaimSecret
from avis.shared.sealing import Sealed, SealingError
from tests.support.basics import eventually
from tests.support.notify import (
    NotifyStack,
    Patient,
    mailbox,
    sink_rules,
    slowly_retrying_notify,
)

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[NotifyStack]:
    async with slowly_retrying_notify() as s:
        yield s


def partner_filed(stack: NotifyStack, p: Patient) -> Event:
    """`avis.case.submitted.v1` of a case a partner filed: a claim secret sealed under the
    case's key, beside the contact."""
    assert p.ring is not None
    base = stack.submitted(p)
    payload = base.payload()
    assert isinstance(payload, CaseSubmitted)
    claim = p.ring.seal_json(ClaimSecret(secret="claim-secret-0123456789abcdef"), aad=base.id)
    changed = payload.model_copy(update={"patient_id": None, "claim": claim})
    return dataclasses.replace(base, data=changed.model_dump(mode="json"))


async def _queued_after_a_failure(stack: NotifyStack, case_id: str, count: int) -> dict[str, Any]:
    """The case's last notification, once it failed once and waits for its retry."""

    async def check() -> dict[str, Any] | None:
        items = await stack.notifications(case_id)
        last = items[-1] if len(items) == count else None
        return last if last and last["status"] == "queued" and last["attempts"] else None

    return dict(await eventually(check))


async def test_the_contact_and_claim_are_sealed_under_the_cases_key(stack: NotifyStack) -> None:
    p = await stack.keyed(stack.patient("fr", partner_id="insurer-9"))
    assert p.ring is not None and p.key_ref is not None
    event = partner_filed(stack, p)
    await stack.publish(event)
    (n,) = await stack.settled(p.case_id, 1)
    assert n["status"] == "sent"

    doc = await stack.db["cases"].find_one({"_id": p.case_id})
    assert doc is not None and doc["key_ref"] == p.key_ref
    # Of the contact, only what an email needs: no name, phone or birth date.
    contact = p.ring.open_json(Sealed.model_validate(doc["contact"]), contact_aad(p.case_id))
    assert set(contact) == {"email", "preferred_language"}, contact
    for field, aad in (("contact", contact_aad(p.case_id)), ("claim", claim_aad(p.case_id))):
        sealed = Sealed.model_validate(doc[field])
        assert sealed.kid == case_kid(p.key_ref), field
        assert p.ring.open_json(sealed, aad), field  # the case's key opens it
        with pytest.raises(SealingError):
            stack.keyring.open(sealed, aad)  # the service's keyring alone does not


async def test_an_erased_cases_queued_email_is_cancelled_and_nothing_more_is_sent(
    stack: NotifyStack,
) -> None:
    erased, kept = stack.patient(), stack.patient()
    for p in (erased, kept):
        await stack.keyed(p)
    await stack.publish(stack.submitted(erased))
    await stack.settled(erased.case_id, 1)
    with sink_rules({"match": erased.email, "mode": "fail"}):
        await stack.publish(stack.assigned(erased, due_in_days=10))
        pending = await _queued_after_a_failure(stack, erased.case_id, 2)

        await stack.keys.destroy(erased.key_ref)  # intake destroys the key, then says so
        erasure = stack.erased(erased)
        await stack.publish(erasure)
        await stack.consumed(erasure)
    later = stack.report(erased, 1)
    await stack.publish(later)
    await stack.consumed(later)

    first, second = await stack.notifications(erased.case_id)  # the report-ready queued none
    assert first["status"] == "sent"
    assert second["id"] == pending["id"]
    assert second["status"] == "cancelled" and second["next_attempt_at"] is None
    doc = await stack.db["cases"].find_one({"_id": erased.case_id})
    assert doc is not None and doc["erased_at"] is not None
    assert "contact" not in doc and doc["reference"] == erased.reference  # codes stay

    await stack.publish(stack.submitted(kept), stack.assigned(kept, due_in_days=10))
    assert [n["status"] for n in await stack.settled(kept.case_id, 2)] == ["sent", "sent"]
    assert len(mailbox(kept.email)) == 2  # another case's contact still opens
    await asyncio.sleep(1.0)  # the sender's ticks are 0.2 s: anything still due went by now
    assert len(mailbox(erased.email)) == 1, "an email of the erased case was sent"


async def test_a_send_whose_case_key_is_destroyed_is_cancelled_not_sent(stack: NotifyStack) -> None:
    p = await stack.keyed(stack.patient())
    with sink_rules({"match": p.email, "mode": "fail"}):
        await stack.publish(stack.submitted(p))
        pending = await _queued_after_a_failure(stack, p.case_id, 1)
    # The key destroyed, and this copy's cached key dropped, before the erasure reaches notify:
    # the retry finds the key gone.
    await stack.keys.destroy(p.key_ref)
    stack.notify.keys.forget(p.key_ref)
    send = await stack.notify.store.send(pending["id"])
    assert isinstance(send, SendDoc)

    async with stack.sender.holding(send):  # as the email queue attempts it
        assert await stack.sender.attempt(send) is None  # done with: not to be retried

    (n,) = await stack.notifications(p.case_id)
    assert n["status"] == "cancelled" and len(n["attempts"]) == 1
    assert mailbox(p.email) == []
