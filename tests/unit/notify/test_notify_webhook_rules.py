"""Partner webhooks without broker or store: signatures against the Standard Webhooks
library's own verify, the URL and address checks (a table, with a stubbed resolver: nothing
here resolves or connects beyond loopback), the retry schedule, and the transport's refusals
against a real loopback server (no redirect followed, the response read capped)."""

import asyncio
import ipaddress
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI, Request, Response
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from avis.notify import rules
from avis.notify.models import Outcome, WebhookEvent
from avis.notify.webhooks import MAX_RESPONSE_BYTES, Refused, WebhookClient, sign
from tests.support.basics import serve

SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCBvZiAzMiBi"


def test_signature_verifies_with_the_library_and_names_both_secrets_in_a_rotation() -> None:
    now = datetime.now(UTC)
    body = json.dumps({"id": "evt-1", "data": {"status": "submitted"}})
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign([SECRET_B, SECRET_A], "msg_1", now, body),
    }
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(SECRET_A).verify(body, headers)["id"] == "evt-1"
    assert Webhook(SECRET_B).verify(body, headers)["id"] == "evt-1"
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_A).verify(body.replace("submitted", "withdrawn"), headers)


def test_webhook_id_is_stable_per_event_and_subscription() -> None:
    a = rules.webhook_id("evt-1", "sub_a")
    assert a == rules.webhook_id("evt-1", "sub_a")
    assert a != rules.webhook_id("evt-1", "sub_b") != rules.webhook_id("evt-2", "sub_a")
    assert a.startswith("msg_")


@pytest.mark.parametrize(
    ("address", "loopback_ok", "refusal"),
    [
        ("93.184.216.34", False, None),
        ("2606:2800:220:1:248:1893:25c8:1946", False, None),
        ("127.0.0.1", False, "a loopback address"),
        ("127.0.0.1", True, None),
        ("::1", False, "a loopback address"),
        ("10.1.2.3", True, "a private address"),
        ("172.16.0.9", False, "a private address"),
        ("192.168.1.1", False, "a private address"),
        ("fd12:3456::1", False, "a private address"),
        ("169.254.169.254", True, "a cloud metadata address"),
        ("fd00:ec2::254", True, "a cloud metadata address"),
        ("169.254.10.10", False, "a link-local address"),
        ("fe80::1", False, "a link-local address"),
        ("224.0.0.1", False, "a multicast address"),
        ("ff02::1", False, "a multicast address"),
        ("0.0.0.0", True, "an unspecified address"),
        ("240.0.0.1", False, "a reserved address"),
        ("100.64.0.1", False, "a reserved address"),
        ("::ffff:10.0.0.1", False, "a private address"),
        ("::ffff:127.0.0.1", False, "a loopback address"),
    ],
)
def test_address_checks(address: str, loopback_ok: bool, refusal: str | None) -> None:
    assert rules.address_refusal(ipaddress.ip_address(address), loopback_ok) == refusal


@pytest.mark.parametrize(
    ("url", "dev", "why"),
    [
        ("https://partner.example/hooks?x=1", False, ""),
        ("http://partner.example/hooks", False, "must be https://"),
        ("http://127.0.0.1:9000/hooks", True, ""),
        ("ftp://partner.example/", True, "must be https://"),
        ("https://user:pw@partner.example/", False, "credentials"),
        ("https:///nohost", False, "no host"),
        ("https://partner.example/#frag", False, "fragment"),
        ("https://partner.example:99999/", False, "cannot be parsed"),
    ],
)
def test_url_checks(url: str, dev: bool, why: str) -> None:
    target, reason = rules.url_refusal(url, dev)
    assert (target is not None) == (why == "")
    assert why in reason


def test_resolved_addresses_all_must_pass_and_http_is_for_loopback_only() -> None:
    https, _ = rules.url_refusal("https://partner.example/", True)
    http, _ = rules.url_refusal("http://partner.example/", True)
    assert https is not None and http is not None
    assert rules.resolved_refusal(https, ["93.184.216.34"], False) == ("93.184.216.34", "")
    # One inside address among public ones refuses the whole name.
    assert rules.resolved_refusal(https, ["93.184.216.34", "10.0.0.5"], False)[0] is None
    assert rules.resolved_refusal(https, [], False)[1] == "the host does not resolve"
    assert rules.resolved_refusal(http, ["93.184.216.34"], True)[0] is None
    assert rules.resolved_refusal(http, ["127.0.0.1"], True) == ("127.0.0.1", "")
    assert rules.resolved_refusal(http, ["127.0.0.1"], False)[0] is None


def test_retry_schedule_backs_off_exponentially_with_jitter_within_the_window() -> None:
    first = datetime(2026, 1, 1, tzinfo=UTC)
    kw = {"base": 5.0, "cap": 3600.0, "window": 86400.0}
    delays = []
    now = first
    for failures in range(1, 100):
        at = rules.webhook_retry_at(failures, first, now, jitter=1.0, **kw)
        if at is None:
            break
        delays.append((at - now).total_seconds())
        now = at
    assert delays[:6] == [5, 10, 20, 40, 80, 160]
    assert max(delays) == 3600
    assert now <= first + timedelta(days=1)
    assert 25 < len(delays) < 40  # about 33 attempts in the first 24 hours
    half = rules.webhook_retry_at(3, first, first, jitter=0.5, **kw)
    assert half == first + timedelta(seconds=10)
    assert rules.webhook_retry_at(0, first, first, jitter=1.0, **kw) is None


def test_outcomes_and_disabling() -> None:
    assert rules.webhook_outcome(204) is Outcome.SENT
    assert rules.webhook_outcome(500) is Outcome.TRANSIENT
    assert rules.webhook_outcome(302) is Outcome.TRANSIENT
    assert rules.webhook_outcome(410) is Outcome.PERMANENT
    assert rules.should_disable(5, 5) and not rules.should_disable(4, 5)
    assert not rules.should_disable(1000, 0)


def test_scope_needs_both_the_partner_and_the_consent() -> None:
    assert rules.partner_scope("p1", ["review", "share_with_partner"]).shared
    assert not rules.partner_scope("p1", ["review"]).shared
    assert not rules.partner_scope(None, ["share_with_partner"]).shared


def test_payload_is_thin() -> None:
    body = rules.webhook_payload(
        event_id="evt-1",
        event_type=WebhookEvent.REPORT_READY,
        source="/avis/reports",
        time=datetime(2026, 1, 1, tzinfo=UTC),
        case_id="case-1",
        reference="AV-2026-000001",
        partner_reference="INS-42",
        link="https://avis.example/v1/reports/r1",
        extra={"version": 1},
    )
    assert body["subject"] == "case-1" and body["time"] == "2026-01-01T00:00:00Z"
    assert body["data"] == {
        "case_id": "case-1",
        "reference": "AV-2026-000001",
        "partner_reference": "INS-42",
        "status": "report_ready",
        "link": "https://avis.example/v1/reports/r1",
        "version": 1,
    }


# --- the transport, against a loopback server, with a stubbed resolver --------------------


def stub(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        if host in table:
            return table[host]
        raise OSError("no such host (stub)")

    return resolve


@pytest.fixture(scope="module")
async def endpoint() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    app = FastAPI()

    @app.post("/ok")
    async def ok(request: Request) -> Response:
        seen.append(dict(request.headers))
        return Response(status_code=204)

    @app.post("/redirect")
    async def redirect() -> Response:
        return Response(status_code=307, headers={"location": "http://169.254.169.254/"})

    @app.post("/big")
    async def big() -> Response:
        return Response(b"x" * (MAX_RESPONSE_BYTES * 50), status_code=200)

    @app.post("/slow")
    async def slow() -> Response:
        await asyncio.sleep(2)
        return Response(status_code=200)

    async with serve(app) as url:
        yield url, seen


async def test_the_transport_refuses_inside_addresses_at_connection_time(
    endpoint: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = endpoint
    port = url.rsplit(":", 1)[1]
    table = {"partner.example": ["127.0.0.1"], "inside.example": ["10.20.30.40"]}
    client = WebhookClient(
        allow_http_loopback=True, timeout=1.0, connect_timeout=1.0, resolver=stub(table)
    )
    answer = await client.post(f"http://partner.example:{port}/ok", "{}", {"webhook-id": "m"})
    assert answer.outcome is Outcome.SENT and answer.code == 204
    assert seen[-1]["host"] == f"partner.example:{port}" and seen[-1]["webhook-id"] == "m"
    # The same name now points inside (a DNS rebinding): refused before any connection.
    table["partner.example"] = ["10.20.30.40"]
    refused = await client.post(f"http://partner.example:{port}/ok", "{}", {})
    assert refused.outcome is Outcome.TRANSIENT and refused.code is None
    assert "private address" in refused.reason
    with pytest.raises(Refused, match="private"):
        await client.check("https://inside.example/")
    with pytest.raises(Refused, match="does not resolve"):
        await client.check("https://unknown.example/")
    strict = WebhookClient(
        allow_http_loopback=False, timeout=1.0, connect_timeout=1.0, resolver=stub(table)
    )
    with pytest.raises(Refused, match="https"):
        await strict.check(f"{url}/ok")


async def test_no_redirect_followed_response_capped_and_timeouts_short(
    endpoint: tuple[str, list[dict[str, str]]],
) -> None:
    url, _ = endpoint
    client = WebhookClient(allow_http_loopback=True, timeout=0.5, connect_timeout=0.5)
    redirected = await client.post(f"{url}/redirect", "{}", {})
    assert redirected.code == 307 and redirected.outcome is Outcome.TRANSIENT
    assert "redirects are not followed" in redirected.reason
    big = await client.post(f"{url}/big", "{}", {})
    assert big.outcome is Outcome.SENT
    slow = await client.post(f"{url}/slow", "{}", {})
    assert slow.outcome is Outcome.TRANSIENT and slow.reason == "timed out"
    assert slow.latency_ms < 4000
