"""The patient is told by email that their case is erased, at the address the erasure's event
carries under a key of its own (its notice); that key is destroyed once the email is sent, or
given up, so the address is then gone everywhere, the event included. On the test stack's
broker, store, SMTP sink and key server."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from avis.notify.service import CaseErasure
from avis.shared.case_keys import CaseKeyDestroyed
from avis.shared.envelope import Event
from avis.shared.events import CaseErased
from avis.shared.keys import KeyServiceError, KeyUnavailable, KmipKeyService
from tests.support import kms
from tests.support.basics import eventually
from tests.support.notify import (
    NotifyStack,
    Patient,
    mailbox,
    sink_rules,
    slowly_retrying_notify,
)

pytestmark = pytest.mark.infra

SUBJECTS = {"fr": "Les données de votre demande", "en": "The data of your request"}


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[NotifyStack]:
    async with slowly_retrying_notify() as s:
        yield s


async def _submitted_and_told(stack: NotifyStack, language: str) -> Patient:
    """A patient whose case has its key and was received (its first email sent)."""
    p = await stack.keyed(stack.patient(language))
    await stack.publish(stack.submitted(p))
    await stack.settled(p.case_id, 1)
    return p


async def _erased(stack: NotifyStack, p: Patient) -> tuple[Event, str]:
    """Intake destroys the case's key, then publishes the erasure with its notice."""
    await stack.keys.destroy(p.key_ref)
    event, notice_ref = await stack.noticed_erasure(p)
    await stack.publish(event)
    return event, notice_ref


async def _address_gone(stack: NotifyStack, case_id: str) -> dict[str, Any]:
    """The case's stored document once it keeps no address any more."""

    async def check() -> dict[str, Any] | None:
        doc = await stack.db["cases"].find_one({"_id": case_id})
        return doc if doc is not None and doc.get("erased_at") and "contact" not in doc else None

    return dict(await eventually(check, timeout=30))


async def _destroyed(notice_ref: str) -> None:
    """The notice's key is gone from the key server (read by a client with no copy of it)."""
    with pytest.raises(KeyUnavailable):
        await KmipKeyService(kms.endpoint("intake")).key(notice_ref)


@pytest.mark.parametrize("language", ["fr", "en"])
async def test_the_patient_is_told_once_and_the_address_is_then_destroyed(
    stack: NotifyStack, language: str
) -> None:
    p = await _submitted_and_told(stack, language)
    with sink_rules({"match": p.email, "mode": "fail", "count": 1}):
        await stack.publish(stack.assigned(p, due_in_days=10))

        async def failed_once() -> bool:
            items = await stack.notifications(p.case_id)
            return len(items) == 2 and items[1]["status"] == "queued" and bool(items[1]["attempts"])

        await eventually(failed_once)  # queued for its retry, 30 s from now
    event, notice_ref = await _erased(stack, p)
    await stack.consumed(event)
    # Cancelled by the erasure itself, not by its retry 30 s later finding the case erased.
    assert (await stack.notifications(p.case_id))[1]["status"] == "cancelled"

    received, assigned, done = await stack.settled(p.case_id, 3)
    assert [n["template"] for n in (received, assigned, done)] == [
        "case_received",
        "review_assigned",
        "erasure_done",
    ]
    assert assigned["status"] == "cancelled"  # the erasure still cancels the case's other sends
    assert done["status"] == "sent" and done["language"] == language
    await _address_gone(stack, p.case_id)
    await _destroyed(notice_ref)
    payload = event.payload()
    assert isinstance(payload, CaseErased) and payload.notice is not None
    with pytest.raises(CaseKeyDestroyed):  # the event's copy of the address opens no more
        await kms.opened(stack.settings, payload.notice, event.id)

    first, told = mailbox(p.email)
    assert first["Message-ID"] == received["message_id"]
    assert told["Message-ID"] == done["message_id"]
    assert str(told["Subject"]).startswith(SUBJECTS[language])
    assert p.reference in str(told["Subject"])
    assert told["Content-Language"] == language

    # A redelivery, through the broker and straight to the use case, changes nothing.
    await stack.publish(event)
    await stack.consumed(event)
    await CaseErasure(stack.notify).case_erased(event=event, erasure=payload)
    await asyncio.sleep(1.0)  # the sender's ticks are 0.2 s: anything due went by now
    assert len(mailbox(p.email)) == 2
    assert len(await stack.notifications(p.case_id)) == 3


async def test_an_erasure_email_given_up_for_good_still_destroys_its_key(
    stack: NotifyStack,
) -> None:
    p = await _submitted_and_told(stack, "fr")
    with sink_rules({"match": p.email, "mode": "refuse"}):  # 550: never to be retried
        _, notice_ref = await _erased(stack, p)
        _, done = await stack.settled(p.case_id, 2)
    assert done["template"] == "erasure_done" and done["status"] == "failed"
    await _address_gone(stack, p.case_id)
    await _destroyed(notice_ref)
    assert len(mailbox(p.email)) == 1


async def test_a_key_server_away_after_the_send_destroys_the_key_on_the_next_pass(
    stack: NotifyStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = await _submitted_and_told(stack, "en")
    keys = stack.sender.keys
    destroy, failed = keys.destroy, []

    async def away_once(key_ref: str | None) -> None:
        if not failed:
            failed.append(key_ref)
            raise KeyServiceError("the key server is away (test)")
        await destroy(key_ref)

    monkeypatch.setattr(keys, "destroy", away_once)
    _, notice_ref = await _erased(stack, p)
    await _address_gone(stack, p.case_id)
    assert failed == [notice_ref]  # sent, its key's destruction failed once, then done
    await _destroyed(notice_ref)
    _, done = await stack.notifications(p.case_id)
    assert done["status"] == "sent" and len(done["attempts"]) == 1
    assert len(mailbox(p.email)) == 2  # sent once, not again


async def test_without_a_notice_nothing_is_sent(stack: NotifyStack) -> None:
    p = await _submitted_and_told(stack, "fr")
    await stack.keys.destroy(p.key_ref)
    event = stack.erased(p)  # an erasure whose case's key was gone already: no notice
    await stack.publish(event)
    await stack.consumed(event)
    await asyncio.sleep(1.0)
    assert [n["template"] for n in await stack.notifications(p.case_id)] == ["case_received"]
    assert len(mailbox(p.email)) == 1
