"""Two copies of notify over one store: each applies an event of the same case at the same time,
as beside a rebalance (the former owner of the case's partition still finishing one event while
the new owner takes the next). Each copy writes the whole case it read, so without a hold among
the copies the later write drops the earlier one's notification, whose email still goes out and
whose event the inbox already marks done (docs/replicas.md)."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from avis.notify import rules
from avis.notify.main import create_app
from avis.notify.service import NotifyService
from avis.shared.runtime import Runtime
from tests.support.basics import eventually, serve
from tests.support.notify import NotifyStack, running_notify

pytestmark = pytest.mark.infra

ROUNDS = 6


@pytest.fixture(scope="module")
async def copies() -> AsyncIterator[tuple[NotifyStack, NotifyService]]:
    """Copy A (the test's stack) and the use cases of copy B, a second app on the same
    settings: the same database, the same consumer group."""
    async with running_notify() as a:
        second = create_app(a.settings)
        second.state.notify.webhooks.resolver = a.notify.webhooks.resolver
        runtime: Runtime = second.state.runtime
        async with serve(second):
            await eventually(lambda: runtime.kafka_started, timeout=60)
            yield a, second.state.notify


async def test_two_copies_applying_one_case_keep_both_notifications(
    copies: tuple[NotifyStack, NotifyService],
) -> None:
    stack, b = copies
    for _ in range(ROUNDS):
        p = stack.patient("en")
        submitted = stack.submitted(p)
        await stack.notify.case_submitted(event=submitted, payload=submitted.payload())
        assigned = stack.assigned(p, due_in_days=7, traceparent=submitted.traceparent)
        report = stack.report(p, 1, traceparent=submitted.traceparent)
        await asyncio.gather(
            stack.notify.apply(event=assigned, payload=assigned.payload()),
            b.apply(event=report, payload=report.payload()),
        )
        case = await stack.db["cases"].find_one({"_id": p.case_id})
        assert case is not None
        kept = set(case["notifications"])
        for event in (submitted, assigned, report):
            send_id = rules.send_id(event.id)
            assert await stack.db["sends"].find_one({"_id": send_id}) is not None, event.type
            assert send_id in kept, f"the send of {event.type} was queued, then dropped"
