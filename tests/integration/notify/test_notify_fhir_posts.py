"""The physician's copy posted as a FHIR document, against a running notify over the real broker
and store (names resolved by the tests' resolver; the endpoint, and the reports service the
document is read from, are one loopback server): the posts keep to the webhooks' limits, from
the webhooks' settings. At most `webhook_per_subscription` posts to one institution at once,
and a slow one holds neither another institution's posts nor the emails; an endpoint that
fails `webhook_disable_after_failures` times in a row is disabled, and the sends to it then
wait, posting nothing, until a coordinator re-enables it (`/v1/fhir-endpoints`, fuzzed here for
every role), which posts them at once. Their log lines say "fhir post", and carry neither the link's
secret nor the physician's address. A copy sent is told (`avis.report.physician-copy-sent.v1`,
from notify's outbox) and becomes a webhook for the partner that filed the case, naming no
one."""

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from avis.shared.events import Language, PhysicianContact
from tests.support.basics import eventually, unique
from tests.support.fuzz import assert_clean, fuzz
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


async def test_a_disabled_endpoint_holds_its_posts_until_a_coordinator_re_enables_it(
    stack: NotifyStack, receiver: HookReceiver, capfd: pytest.CaptureFixture[str]
) -> None:
    path = f"/fhir/{DOWN}"
    receiver.answer[path] = 500
    first, physician = await report_for_physician(stack, receiver, DOWN)

    async def endpoint() -> dict[str, Any] | None:
        async with stack.client() as http:
            listed = await http.get("/v1/fhir-endpoints")
        assert listed.status_code == 200, listed.text
        (state,) = [e for e in listed.json()["items"] if e["institution"] == DOWN]
        return state if state["waiting"] >= 1 else None

    async def copy(p: Patient) -> dict[str, Any]:
        items = await stack.notifications(p.case_id)
        (found,) = [n for n in items if n["template"] == "physician_report"]
        return found

    state = await eventually(endpoint, timeout=60)
    assert (state["enabled"], state["consecutive_failures"]) == (False, 2), state
    assert state["disabled_reason"].startswith("2 failed posts in a row"), state
    assert "hooks.partner.example" not in json.dumps(state), "never the endpoint's URL"
    held = await copy(first)
    assert held["status"] == "queued", held
    reasons = [a["reason"] for a in held["attempts"]]
    assert reasons == ["FHIR endpoint: 500 from the endpoint"] * 2, reasons

    # The next case's post waits too, posting nothing.
    second, _ = await report_for_physician(stack, receiver, DOWN)

    async def both_wait() -> bool:
        state = await endpoint()
        return state is not None and state["waiting"] == 2

    await eventually(both_wait, timeout=60)
    await asyncio.sleep(1.5)  # a few of the queue's ticks: nothing is posted meanwhile
    assert len(receiver.at(path)) == 2, "a disabled endpoint gets no post"
    assert (await copy(first))["status"] == (await copy(second))["status"] == "queued"

    # The endpoint is back; re-enabled by a coordinator, both posts go at once.
    receiver.answer.pop(path)
    async with stack.client() as http:
        enabled = await http.post(f"/v1/fhir-endpoints/{DOWN}/enable")
    assert enabled.status_code == 200, enabled.text
    assert enabled.json() | {"disabled_at": None} == {
        "institution": DOWN,
        "enabled": True,
        "consecutive_failures": 0,
        "disabled_reason": None,
        "disabled_at": None,
        "waiting": 0,
    }
    await eventually(lambda: len(receiver.at(path, 204)) == 2, timeout=60)
    for p in (first, second):
        sent = await eventually(functools.partial(_sent, stack, p), timeout=60)
        assert sent["channel"] == "fhir", sent

    logs = capfd.readouterr()
    text = logs.out + logs.err
    assert "fhir post retried" in text and "fhir post waits" in text
    assert "fhir endpoint disabled" in text and "fhir endpoint enabled" in text
    for line in text.splitlines():
        if held["id"] in line:
            assert "email" not in line, f"a post's log line says what it is: {line}"
    assert physician.email not in text and str(physician.link_secret) not in text


async def _sent(stack: NotifyStack, p: Patient) -> dict[str, Any] | None:
    items = await stack.notifications(p.case_id)
    done = [n for n in items if n["template"] == "physician_report" and n["status"] == "sent"]
    return done[0] if done else None


async def test_only_coordinators_see_and_re_enable_endpoints_with_reasons_for_bad_input(
    stack: NotifyStack,
) -> None:
    async with stack.client() as http:
        unknown = await http.post("/v1/fhir-endpoints/999999999/enable")
        assert unknown.status_code == 404, unknown.text
        assert unknown.headers["content-type"].startswith("application/problem+json")
        malformed = await http.post("/v1/fhir-endpoints/%20bad%20code/enable")
        assert malformed.status_code == 422, malformed.text
        already = await http.post(f"/v1/fhir-endpoints/{FINE}/enable")
        assert already.status_code == 200 and already.json()["enabled"] is True
    for role in ("patient", "reviewer", "translator", "partner", "service"):
        async with stack.client(f"{role}-1", role) as http:  # type: ignore[arg-type]
            listed = await http.get("/v1/fhir-endpoints")
            enable = await http.post(f"/v1/fhir-endpoints/{FINE}/enable")
        assert listed.status_code == enable.status_code == 403, (role, listed.text)
    async with httpx.AsyncClient(base_url=stack.url) as anonymous:
        assert (await anonymous.get("/v1/fhir-endpoints")).status_code == 401


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


async def test_openapi_fuzzing_of_the_fhir_endpoints_with_each_role_finds_nothing(
    stack: NotifyStack,
) -> None:
    # Last in the module: fuzzing re-enables the institutions' endpoints.
    only = ("--include-path-regex", "^/v1/fhir-endpoints")
    for role in ("coordinator", "patient", "reviewer", "translator", "partner", "service"):
        token = stack.token(f"{role}-fuzz", role)  # type: ignore[arg-type]
        assert_clean(await fuzz(stack.url, token, *only, seed="20261204", max_seconds=5))
