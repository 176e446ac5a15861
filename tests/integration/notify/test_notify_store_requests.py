"""What an event of a partner's case asks of notify's store, counted by collection and command
where the service sends them (its own client's listener), and that what was cut from it keeps
the guarantee: no inbox, the case written once, the email's and the delivery's hand-offs in one
request once the case is written, the subscription read and noted in one request, the case not
read again by the sender; and a stop between the case's write and the hand-offs loses nothing."""

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import monitoring

import avis.notify.service as notify_service
from avis.shared.observability import StoreRequests
from tests.support.basics import eventually, unique
from tests.support.notify import NotifyStack, hook_receiver, mailbox, subscribe

pytestmark = pytest.mark.infra


@contextlib.contextmanager
def counted(service: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[tuple[str, str]]]:
    """The commands the service's client sends while inside, by (collection, command)."""
    seen: Counter[tuple[str, str]] = Counter()
    started = StoreRequests.started

    def spy(self: StoreRequests, event: monitoring.CommandStartedEvent) -> None:
        if self.service == service:
            target = event.command.get(event.command_name)
            name = target if isinstance(target, str) else ""
            seen[("inbox" if name.startswith("inbox_") else name, event.command_name)] += 1
        started(self, event)

    with monkeypatch.context() as patched:
        patched.setattr(StoreRequests, "started", spy)
        yield seen


async def test_an_event_with_an_email_and_a_delivery(
    stack: NotifyStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with hook_receiver() as (receiver, port):
        partner = unique("ptn")
        await subscribe(stack, partner, f"http://hooks.partner.example:{port}/a")
        p = stack.patient("en", partner_id=partner)
        await stack.publish(stack.submitted(p))
        await stack.settled(p.case_id, 1)
        await eventually(lambda: len(receiver.at("/a", 204)) == 1, timeout=60)
        # (Not through the API meanwhile: it reads the case too.)
        with counted(stack.settings.service_name, monkeypatch) as seen:
            await stack.publish(stack.assigned(p, 5))
            await eventually(lambda: len(mailbox(p.email)) == 2, timeout=60)
            await eventually(lambda: len(receiver.at("/a", 204)) == 2, timeout=60)
        await stack.settled(p.case_id, 2)
    assert seen[("inbox", "find")] == seen[("inbox", "insert")] == 0, seen
    assert seen[("cases", "find")] == 1, "the handler's read; the sender used it"
    assert seen[("cases", "update")] == 1, "the case written once"
    assert seen[("handoffs", "update")] == 1, "the email's and the delivery's in one request"
    assert seen[("partners", "find")] == 1
    assert seen[("subscriptions", "findAndModify")] == 1, "read and noted in one"
    assert seen[("subscriptions", "find")] == seen[("subscriptions", "update")] == 0, seen
    assert seen[("sends", "insert")] == seen[("deliveries", "insert")] == 1
    assert seen[("sends", "find")] == seen[("deliveries", "find")] == 0, "handed over"


async def test_a_stop_between_the_case_write_and_the_hand_offs_loses_nothing(
    stack: NotifyStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case records the event in the write before the hand-offs: the redelivery that
    follows a stop there is turned away by the case, and hands off again what is still
    queued, so the email and the delivery go out, once."""
    file_together = notify_service.file_together
    stopped: list[int] = []

    async def stop_once(filings: Any) -> None:
        if filings and not stopped:
            stopped.append(len(filings))
            raise RuntimeError("stopped before the hand-offs")
        await file_together(filings)

    async with hook_receiver() as (receiver, port):
        partner = unique("ptn")
        await subscribe(stack, partner, f"http://hooks.partner.example:{port}/a")
        p = stack.patient("en", partner_id=partner)
        with monkeypatch.context() as patched:
            patched.setattr(notify_service, "file_together", stop_once)
            submitted = stack.submitted(p)
            await stack.publish(submitted)
            items = await stack.settled(p.case_id, 1)
        assert stopped == [2], "the email's and the delivery's hand-offs, stopped once"
        case = await stack.db["cases"].find_one({"_id": p.case_id})
        assert case is not None and case["applied"] == [submitted.id]
        assert [n["template"] for n in items] == ["case_received"]
        assert items[0]["status"] == "sent"
        await eventually(lambda: len(receiver.at("/a", 204)) == 1, timeout=60)
        await stack.publish(submitted)  # redelivered once more: nothing again
        await asyncio.sleep(2.0)
        assert len(receiver.at("/a")) == 1
        assert len(mailbox(p.email)) == 1
        assert len(await stack.settled(p.case_id, 1)) == 1
