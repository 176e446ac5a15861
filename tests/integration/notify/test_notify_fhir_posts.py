"""The physician's copy posted as a FHIR document, against a running notify over the real broker
and store (names resolved by the tests' resolver; the endpoint, and the reports service the
document is read from, are one loopback server): the posts keep to the webhooks' limits, from
the webhooks' settings. At most `webhook_per_subscription` posts to one institution at once,
and a slow one holds neither another institution's posts nor the emails; an endpoint that
fails `webhook_disable_after_failures` times in a row is disabled, and the sends to it then
fail at once, posting nothing. Their log lines say "fhir post", and carry neither the link's
secret nor the physician's address. A copy sent is told (`avis.report.physician-copy-sent.v1`,
from notify's outbox) and becomes a webhook for the partner that filed the case, naming no
one."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from avis.shared.events import Language, PhysicianContact
from tests.support.basics import eventually, unique
from tests.support.notify import (
    HookReceiver,
    NotifyStack,
    Patient,
    hook_receiver,
    mailbox,
    notify_settings,
    running_notify,
    subscribe,
)

pytestmark = pytest.mark.infra

SLOW, DOWN, FINE = "130000001", "130000002", "130000003"
COPY_SENT = "avis.report.physician-copy-sent.v1"


@pytest.fixture(scope="module")
async def receiver_port() -> AsyncIterator[tuple[HookReceiver, int]]:
    """The institutions' endpoints and the reports' links, on one loopback server."""
    async with hook_receiver() as found:
        yield found


@pytest.fixture(scope="module")
async def stack(receiver_port: tuple[HookReceiver, int]) -> AsyncIterator[NotifyStack]:
    """Notify with three institutions' endpoints: one post at once to each, and disabled after
    two failures in a row."""
    _, port = receiver_port
    endpoints = {
        code: f"http://hooks.partner.example:{port}/fhir/{code}" for code in (SLOW, DOWN, FINE)
    }
    settings = notify_settings(
        physician_fhir_endpoints=endpoints,
        webhook_per_subscription=1,
        webhook_disable_after_failures=2,
    )
    async with running_notify(settings) as s:
        yield s


@pytest.fixture
def receiver(receiver_port: tuple[HookReceiver, int]) -> HookReceiver:
    return receiver_port[0]


async def report_for_physician(
    stack: NotifyStack, receiver: HookReceiver, institution: str
) -> tuple[Patient, PhysicianContact]:
    """A case whose patient consented to send the report to their physician at `institution`,
    and its report ready (read from the receiver, as from the reports service)."""
    physician = PhysicianContact(
        name="Dr Hélène Garnier",
        email=f"{unique('dr')}@chu.example",
        language=Language.FR,
        institution_code=institution,
        link_secret=unique("secret"),
    )
    p = stack.patient(physician=physician, physician_institution=institution)
    port = stack.settings.physician_fhir_endpoints[institution].rsplit(":", 1)[1].split("/")[0]
    submitted = stack.submitted(p)
    ready = stack.report(p, 1, submitted.traceparent, reports_url=f"http://127.0.0.1:{port}")
    await stack.publish(submitted, ready)
    return p, physician


async def test_posts_to_one_institution_keep_to_its_cap_and_hold_no_one_else(
    stack: NotifyStack, receiver: HookReceiver
) -> None:
    path = f"/fhir/{SLOW}"
    receiver.hold[path] = asyncio.Event()
    slow = [await report_for_physician(stack, receiver, SLOW) for _ in range(3)]
    await eventually(lambda: receiver.in_flight.get(path) == 1, timeout=60)
    # Another institution's post, and the patients' emails, go while that one is held.
    fine, _ = await report_for_physician(stack, receiver, FINE)
    await eventually(lambda: receiver.at(f"/fhir/{FINE}", 204), timeout=60)
    await eventually(lambda: len(mailbox(slow[0][0].email)) >= 2, timeout=60)
    assert receiver.in_flight[path] == 1, "one post at once to the held institution"
    receiver.hold[path].set()
    await eventually(lambda: len(receiver.at(path, 204)) == 3, timeout=60)
    assert receiver.most_at_once[path] == 1
    for p, physician in [*slow, (fine, None)]:
        items = await stack.settled(p.case_id, 3)
        (posted,) = [n for n in items if n["template"] == "physician_report"]
        assert (posted["channel"], posted["status"]) == ("fhir", "sent"), posted
        if physician is not None:
            assert mailbox(physician.email) == [], "the document instead of the email"


async def test_an_endpoint_failing_in_a_row_is_disabled_and_its_sends_fail_at_once(
    stack: NotifyStack, receiver: HookReceiver, capfd: pytest.CaptureFixture[str]
) -> None:
    path = f"/fhir/{DOWN}"
    receiver.answer[path] = 500
    first, physician = await report_for_physician(stack, receiver, DOWN)

    async def failed(p: Patient) -> dict[str, Any] | None:
        items = await stack.notifications(p.case_id)
        done = [n for n in items if n["template"] == "physician_report" and n["status"] == "failed"]
        return done[0] if done else None

    gave_up = await eventually(lambda: failed(first), timeout=60)
    reasons = [a["reason"] for a in gave_up["attempts"]]
    assert reasons[:2] == ["FHIR endpoint: 500 from the endpoint"] * 2, reasons
    assert reasons[2].startswith("FHIR endpoint disabled: 2 failed posts in a row"), reasons
    assert len(receiver.at(path)) == 2, "the third attempt posts nothing"
    state = await stack.db["fhir_endpoints"].find_one({"_id": DOWN})
    assert state is not None and state["enabled"] is False

    # The next case's post to it fails at once, without a post.
    second, _ = await report_for_physician(stack, receiver, DOWN)
    refused = await eventually(lambda: failed(second), timeout=60)
    assert len(refused["attempts"]) == 1 and len(receiver.at(path)) == 2

    logs = capfd.readouterr()
    text = logs.out + logs.err
    assert "fhir post retried" in text and "fhir post failed" in text
    assert "fhir endpoint disabled" in text
    for line in text.splitlines():
        if gave_up["id"] in line:
            assert "email" not in line, f"a post's log line says what it is: {line}"
    assert physician.email not in text and str(physician.link_secret) not in text


async def test_the_filing_partner_hears_that_the_physician_got_the_report(
    stack: NotifyStack, receiver: HookReceiver
) -> None:
    partner = unique("clinic")
    port = stack.settings.physician_fhir_endpoints[FINE].rsplit(":", 1)[1].split("/")[0]
    hook = f"/partner/{partner}"
    await subscribe(stack, partner, f"http://hooks.partner.example:{port}{hook}", COPY_SENT)
    physician = PhysicianContact(
        name="Dr Paul Sérieux",
        email=f"{unique('dr')}@chu.example",
        language=Language.FR,
        institution_code=FINE,
        link_secret=unique("secret"),
    )
    p = stack.patient(
        partner_id=partner,
        partner_reference="P-77",
        physician=physician,
        physician_institution=FINE,
    )
    submitted = stack.submitted(p)
    ready = stack.report(p, 1, submitted.traceparent, reports_url=f"http://127.0.0.1:{port}")
    await stack.publish(submitted, ready)
    (delivered,) = await eventually(lambda: receiver.at(hook, 204), timeout=60)
    body = json.loads(delivered.body)
    assert body["type"] == COPY_SENT, body
    data = body["data"]
    assert (data["case_id"], data["partner_reference"]) == (p.case_id, "P-77")
    assert (data["report_version"], data["channel"], data["status"]) == (1, "fhir", "report_ready")
    text = delivered.body.decode()
    assert physician.email not in text and "Sérieux" not in text and FINE not in text
    assert str(physician.link_secret) not in text
