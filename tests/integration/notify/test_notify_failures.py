"""A failing mail server: retried with backoff and not lost; a permanent refusal recorded and
visible, not retried; a dead server stalls no partition; a repeat after a crash between the
server's 250 and our record carries the same Message-ID."""

import asyncio
from email.message import EmailMessage

import pytest

from avis.notify.mailer import Mailer, Result, SmtpTarget
from tests.support.basics import eventually
from tests.support.notify import (
    NotifyStack,
    mailbox,
    notify_settings,
    sink_rules,
)

pytestmark = pytest.mark.infra


async def test_transient_failures_are_retried_on_schedule_and_not_lost(
    stack: NotifyStack,
) -> None:
    p = stack.patient("fr")
    with sink_rules(
        {"match": p.email, "mode": "fail", "count": 1},
        {"match": p.email, "mode": "drop", "count": 1},
    ):
        await stack.publish(stack.submitted(p))
        (n,) = await stack.settled(p.case_id, 1)
    assert n["status"] == "sent"
    outcomes = [(a["outcome"], a["code"]) for a in n["attempts"]]
    assert outcomes == [("transient", 451), ("transient", None), ("sent", 250)]
    assert n["attempts"][0]["reason"] == "451 4.3.0"  # the code, never the server's text
    assert n["attempts"][1]["reason"] == "connection dropped"
    # The retries waited as the schedule says (0.3 s then 0.6 s, +-10 %), never sooner.
    first, second, third = (a["at"] for a in n["attempts"])
    assert len(mailbox(p.email)) == 1
    gaps = [_seconds(first, second), _seconds(second, third)]
    assert gaps[0] >= 0.27 and gaps[1] >= 0.54, gaps


async def test_retries_spent_fail_the_send_visibly(stack: NotifyStack) -> None:
    p = stack.patient("en")
    with sink_rules({"match": p.email, "mode": "fail", "count": 10}):
        await stack.publish(stack.submitted(p))
        (n,) = await stack.settled(p.case_id, 1)
    assert n["status"] == "failed"
    assert [a["outcome"] for a in n["attempts"]] == ["transient"] * 4  # first try + 3 retries
    assert "gave up after 4 attempts" in n["attempts"][-1]["reason"]
    assert mailbox(p.email) == []


async def test_a_permanent_refusal_is_recorded_and_not_retried(stack: NotifyStack) -> None:
    p = stack.patient("fr")
    with sink_rules({"match": p.email, "mode": "refuse"}):
        await stack.publish(stack.submitted(p))
        (n,) = await stack.settled(p.case_id, 1)
        await asyncio.sleep(1.5)  # longer than the whole retry schedule
        (again,) = await stack.notifications(p.case_id)
    assert n["status"] == "failed" and n["next_attempt_at"] is None
    assert [(a["outcome"], a["code"], a["reason"]) for a in again["attempts"]] == [
        ("permanent", 550, "550 5.1.1")
    ]
    async with stack.client() as http:
        one = await http.get(f"/v1/notifications/{n['id']}")
    assert one.status_code == 200 and one.json()["status"] == "failed"


async def test_a_dead_server_stalls_no_partition(stack: NotifyStack) -> None:
    """With nothing listening on the SMTP port, every event is still consumed at once and
    every notification queued; once a server answers, they all go out."""
    dead = notify_settings(smtp_url="smtp://127.0.0.1:9")
    stack.sender.mailer = Mailer(SmtpTarget.from_settings(dead))
    schedule = stack.settings.retry_schedule
    stack.settings.retry_schedule = (0.5, 1.0, 30.0)  # long enough to still be queued below
    try:
        patients = [stack.patient("fr") for _ in range(4)]
        for p in patients:
            await stack.publish(stack.submitted(p), stack.assigned(p, 3))

        async def all_queued_and_tried() -> bool:
            for p in patients:
                items = await stack.notifications(p.case_id)
                if len(items) < 2 or not all(n["attempts"] for n in items):
                    return False
            return True

        await eventually(all_queued_and_tried, timeout=60)
        for p in patients:
            for n in await stack.notifications(p.case_id):
                assert n["attempts"][0]["outcome"] == "transient"
                assert n["attempts"][0]["reason"] == "SMTPConnectError"
                assert n["status"] == "queued", n
    finally:
        # The server comes back (the sink on its real port): the queue drains by itself.
        stack.sender.mailer = Mailer(SmtpTarget.from_settings(stack.settings))
        stack.settings.retry_schedule = schedule
    for p in patients:
        items = await stack.settled(p.case_id, 2)
        assert [n["status"] for n in items] == ["sent", "sent"]
        assert len(mailbox(p.email)) == 2


class CrashAfter250(Mailer):
    """The server accepts the email, then the process dies before recording it (once)."""

    crashed = False

    async def send(self, message: EmailMessage) -> Result:
        result = await super().send(message)
        if not self.crashed:
            self.crashed = True
            raise ConnectionResetError("the store went away right after the 250")
        return result


async def test_a_repeat_after_a_crash_carries_the_same_message_id(stack: NotifyStack) -> None:
    p = stack.patient("fr")
    stack.sender.mailer = CrashAfter250(SmtpTarget.from_settings(stack.settings))
    try:
        await stack.publish(stack.submitted(p))
        (n,) = await stack.settled(p.case_id, 1)
    finally:
        stack.sender.mailer = Mailer(SmtpTarget.from_settings(stack.settings))
    mails = await eventually(lambda: len(mailbox(p.email)) >= 2 and mailbox(p.email))
    assert len({str(m["Message-ID"]).strip() for m in mails}) == 1
    assert str(mails[0]["Message-ID"]).strip() == n["message_id"]
    assert mails[0]["Date"] == mails[1]["Date"]
    assert [a["outcome"] for a in n["attempts"]] == ["sent"]


def _seconds(a: str, b: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
