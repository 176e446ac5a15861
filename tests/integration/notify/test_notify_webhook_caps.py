"""Webhook caps against a running notify (the module's `stack`, over the real broker and store;
names resolved by the tests' resolver, nothing connects beyond loopback): a partner's
subscriptions are capped, and an endpoint that answers a byte at a time has its attempt ended at
the deadline and retried, without holding its delivery slot."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from avis.notify.models import WebhookEvent

pytestmark = pytest.mark.infra

EVENT_TYPES = ["avis.case.submitted.v1", "avis.review.assigned.v1"]


def partner_name() -> str:
    """A partner no other test uses."""
    return f"cap-{uuid.uuid4().hex[:10]}"


async def create(stack: Any, partner: str, path: str) -> Any:
    """Ask notify to subscribe `path` of the tests' partner host for `partner`."""
    async with stack.client(partner, "partner") as http:
        return await http.post(
            "/v1/subscriptions",
            json={"url": f"https://hooks.partner.example{path}", "event_types": EVENT_TYPES},
        )


async def test_a_partner_has_at_most_its_cap_of_subscriptions(stack: Any) -> None:
    partner, other = partner_name(), partner_name()
    cap = stack.settings.webhook_max_subscriptions
    made = [await create(stack, partner, f"/{i}") for i in range(cap)]
    assert [r.status_code for r in made] == [201] * cap
    over = await create(stack, partner, "/one-more")
    assert over.status_code == 422
    problem = over.json()
    assert problem["type"].endswith("/too-many-subscriptions")
    assert f"at most {cap} subscriptions" in problem["detail"]
    assert "secret" not in over.text
    assert (await create(stack, other, "/theirs")).status_code == 201  # another partner's own
    async with stack.client(partner, "partner") as http:
        listed = await http.get("/v1/subscriptions", params={"limit": 100})
        assert len(listed.json()["items"]) == cap  # the refused one was not stored
        gone = await http.delete(f"/v1/subscriptions/{made[0].json()['id']}")
        assert gone.status_code == 204
    assert (await create(stack, partner, "/again")).status_code == 201


@contextlib.asynccontextmanager
async def dripping_endpoint(pace: float) -> AsyncIterator[tuple[int, list[float]]]:
    """A loopback endpoint answering 200 and then a byte every `pace` seconds, never done;
    yields its port and when each request arrived."""
    arrivals: list[float] = []
    writers: list[asyncio.StreamWriter] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            arrivals.append(asyncio.get_running_loop().time())
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
            while True:
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(pace)

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], arrivals
    finally:
        for writer in writers:
            writer.close()
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)


async def test_a_dripping_endpoint_is_cut_at_the_deadline_and_retried(stack: Any) -> None:
    partner = partner_name()
    client = stack.notify.webhooks  # the transport the worker posts with
    deadline, client.deadline = client.deadline, 1.0
    try:
        async with dripping_endpoint(pace=0.2) as (port, arrivals):
            async with stack.client(partner, "partner") as http:
                created = await http.post(
                    "/v1/subscriptions",
                    json={
                        "url": f"http://hooks.partner.example:{port}/drip",
                        "event_types": ["avis.case.submitted.v1"],
                    },
                )
            assert created.status_code == 201, created.text
            patient = stack.patient("fr", partner_id=partner)
            await stack.publish(stack.submitted(patient))
            for _ in range(300):  # the first attempt and its retry reach the endpoint
                if len(arrivals) >= 2:
                    break
                await asyncio.sleep(0.1)
            assert len(arrivals) >= 2, "the attempt was not retried after its deadline"
            async with stack.client(partner, "partner") as http:
                page = await http.get(
                    "/v1/deliveries", params={"subscription_id": created.json()["id"]}
                )
            (delivery,) = page.json()["items"]
            first = delivery["attempts"][0]
            assert first["reason"] == "timed out: the attempt took over 1 s"
            assert first["code"] is None
            # The read timeout (2 s between bytes) never fires at this pace; the deadline did.
            assert 900 <= first["latency_ms"] < 1900
            assert delivery["status"] == "queued"
    finally:
        client.deadline = deadline


async def test_writers_of_one_subscription_keep_each_others_fields(stack: Any) -> None:
    """The partner's change and the worker's failure count, each read before the other wrote
    (two copies at once): each writes only what it changed, so both stay."""
    partner = partner_name()
    made = await create(stack, partner, "/both")
    assert made.status_code == 201
    store = stack.notify.store
    sub_id = made.json()["id"]
    at_partner, at_worker = await store.subscription(sub_id), await store.subscription(sub_id)
    assert at_partner is not None and at_worker is not None
    partner_before = at_partner.model_copy(deep=True)
    worker_before = at_worker.model_copy(deep=True)
    at_partner.description = "changed by the partner"
    at_worker.consecutive_failures = 3
    await store.save_subscription(at_partner, partner_before)
    await store.save_subscription(at_worker, worker_before)
    assert await store.take_delivery(sub_id, "d-1", WebhookEvent.CASE_SUBMITTED) is not None
    both = await store.subscription(sub_id)
    assert both is not None
    assert (both.description, both.consecutive_failures, both.recent) == (
        "changed by the partner",
        3,
        ["d-1"],
    )
    taken = await store.take_delivery(sub_id, "d-2", WebhookEvent.CASE_SUBMITTED)
    assert taken is not None and taken.recent == ["d-1", "d-2"]
    await store.drop_recent(sub_id, ["d-1"])  # the oldest falls out
    after = await store.subscription(sub_id)
    assert after is not None and after.recent == ["d-2"]
