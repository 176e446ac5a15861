"""Notify's operational records on the retention calendar, over the real broker and store: an
email's send and a webhook delivery are purged once their periods (AVIS_NOTIFY_SEND_RETENTION_DAYS,
AVIS_NOTIFY_DELIVERY_RETENTION_DAYS) are over, each on its own day, while what is not yet due
stays; the APIs then answer without them."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from avis.notify.models import DeliveryStatus, WebhookEvent
from avis.notify.store import DeliveryDoc
from tests.support.basics import eventually, unique
from tests.support.notify import (
    NotifyStack,
    deliveries,
    hook_receiver,
    notify_settings,
    running_notify,
    subscribe,
)

pytestmark = pytest.mark.infra

SENDS, DELIVERIES = 7, 14  # days: the emails' sends go first


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[NotifyStack]:
    settings = notify_settings(send_retention_days=SENDS, delivery_retention_days=DELIVERIES)
    async with running_notify(settings) as s:
        yield s


async def test_sends_and_deliveries_are_purged_after_their_periods(stack: NotifyStack) -> None:
    async with hook_receiver() as (receiver, port):
        partner = unique("ptn")
        sub = await subscribe(stack, partner, f"http://hooks.partner.example:{port}/r")
        p = stack.patient("fr", partner_id=partner, partner_reference="INS-9")
        await stack.publish(stack.submitted(p))
        [email] = await stack.settled(p.case_id, 1)
        assert email["status"] == "sent"

        async def delivered() -> bool:
            return len(receiver.at("/r", 204)) == 1

        await eventually(delivered, timeout=60)
    [delivery] = await deliveries(stack, partner, sub["id"])
    sends, hooks = stack.db["sends"], stack.db["deliveries"]
    assert await sends.find_one({"_id": email["id"]}) is not None
    assert await hooks.find_one({"_id": delivery["id"]}) is not None

    calendar = stack.notify.store.calendar
    now = datetime.now(UTC)
    assert await calendar.sweep(now + timedelta(days=SENDS)) == 0, "the send's last day: kept"
    assert await sends.find_one({"_id": email["id"]}) is not None

    assert await calendar.sweep(now + timedelta(days=SENDS + 1)) == 1
    assert await sends.find_one({"_id": email["id"]}) is None, "the send is purged"
    assert await hooks.find_one({"_id": delivery["id"]}) is not None, "not due yet: it stays"
    assert await stack.notifications(p.case_id) == [], "the case's list skips a purged send"
    assert [d["id"] for d in await deliveries(stack, partner, sub["id"])] == [delivery["id"]]

    assert await calendar.sweep(now + timedelta(days=DELIVERIES)) == 0
    assert await calendar.sweep(now + timedelta(days=DELIVERIES + 1)) == 1
    assert await hooks.find_one({"_id": delivery["id"]}) is None, "the delivery is purged"
    assert await deliveries(stack, partner, sub["id"]) == []
    # What is not operational data stays: the case (its skeleton and contact) and the partner's
    # subscription.
    assert await stack.db["cases"].find_one({"_id": p.case_id}) is not None
    assert await stack.db["subscriptions"].find_one({"_id": sub["id"]}) is not None


async def test_a_replayed_delivery_is_kept_its_period_from_the_replay(stack: NotifyStack) -> None:
    store = stack.notify.store
    now = datetime.now(UTC)
    delivery = DeliveryDoc(
        _id=unique("wh"),
        subscription_id=unique("sub"),
        partner_id=unique("ptn"),
        case_id=unique("case"),
        event_id=unique("evt"),
        event_type=WebhookEvent.CASE_SUBMITTED,
        webhook_id=unique("msg"),
        body="{}",
        status=DeliveryStatus.DEAD,
        created_at=now - timedelta(days=10),  # due to go in 4 days
    )
    assert await store.queue_delivery(delivery)
    await store.replay_delivery(delivery, now)  # as POST /v1/deliveries/{id}/replay does
    await store.calendar.sweep(now + timedelta(days=5))
    assert await store.delivery(delivery.id) is not None, "its first day no longer purges it"
    await store.calendar.sweep(now + timedelta(days=DELIVERIES + 1))
    assert await store.delivery(delivery.id) is None
