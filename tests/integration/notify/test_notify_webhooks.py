"""Partner webhooks over the real broker and store, to real endpoints on loopback (names
resolved by the tests' resolver): signed deliveries verified with the Standard Webhooks
library, a retry with the same webhook-id, scope (the filing partner, with consent only), dead
deliveries and replay, disabling and re-enabling, a dead or slow partner that holds up neither
the others nor the emails, and nothing identifying in bodies or headers."""

import asyncio
import json
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.basics import eventually, unique
from tests.support.fuzz import assert_clean, fuzz
from tests.support.notify import (
    NotifyStack,
    deliveries,
    hook_receiver,
    notify_settings,
    running_notify,
    subscribe,
)
from tests.support.privacy import assert_absent

pytestmark = pytest.mark.infra

ALL = 4  # submitted, assigned, report ready, withdrawn


def verified(secret: str, received: Any) -> dict[str, Any]:
    """The body, verified with the library as a partner would."""
    return dict(Webhook(secret).verify(received.body, received.headers))


async def test_signed_deliveries_retried_with_the_same_id_in_scope_only(
    stack: NotifyStack,
) -> None:
    async with hook_receiver() as (receiver, port):
        partner, other = unique("ptn"), unique("ptn")
        mine = await subscribe(stack, partner, f"http://hooks.partner.example:{port}/a")
        theirs = await subscribe(stack, other, f"http://other.partner.example:{port}/b")
        only_reports = await subscribe(
            stack, partner, f"http://hooks.partner.example:{port}/c", "avis.report.ready.v1"
        )
        assert mine["secret"].startswith("whsec_")
        receiver.fail_first["/a"] = 1
        receiver.delay["/a"] = 0.05  # so an attempt's latency is at least 50 ms
        filed = stack.patient("fr", partner_id=partner, partner_reference="INS-77")
        unshared = stack.patient("fr", partner_id=partner, share_with_partner=False)
        patient_own = stack.patient("en")
        for p in (filed, unshared, patient_own):
            submitted = stack.submitted(p)
            tp = submitted.traceparent
            await stack.publish(submitted, stack.assigned(p, 5, tp), stack.report(p, 1, tp))
        for p in (filed, unshared, patient_own):
            await stack.settled(p.case_id, 3)

        async def arrived() -> bool:
            return len(receiver.at("/a", 204)) == 3 and len(receiver.at("/c", 204)) == 1

        await eventually(arrived, timeout=60)
        bodies = [verified(mine["secret"], r) for r in receiver.at("/a", 204)]
        assert sorted(b["type"] for b in bodies) == [
            "avis.case.submitted.v1",
            "avis.report.ready.v1",
            "avis.review.assigned.v1",
        ]
        assert {b["subject"] for b in bodies} == {filed.case_id}
        assert {b["data"]["partner_reference"] for b in bodies} == {"INS-77"}
        by_type = {b["type"]: b for b in bodies}
        assert by_type["avis.report.ready.v1"]["data"]["status"] == "report_ready"
        assert by_type["avis.report.ready.v1"]["data"]["link"].endswith("?version=1")
        # The first attempt failed; its retry carries the same webhook-id.
        (failed,) = receiver.at("/a", 500)
        retried = [
            r
            for r in receiver.at("/a", 204)
            if r.headers["webhook-id"] == failed.headers["webhook-id"]
        ]
        assert len(retried) == 1 and retried[0].body == failed.body
        assert verified(only_reports["secret"], receiver.at("/c")[0])["type"] == (
            "avis.report.ready.v1"
        )
        # Another partner heard nothing of this partner's case, nor anyone of the others.
        assert receiver.at("/b") == []
        assert len(receiver.at("/a")) == 4 and len(receiver.at("/c")) == 1
        # Every attempt is visible: codes, latency, nothing queued any more.
        listed = await deliveries(stack, partner, mine["id"])
        assert len(listed) == 3 and {d["status"] for d in listed} == {"delivered"}
        first = next(d for d in listed if d["webhook_id"] == failed.headers["webhook-id"])
        assert [a["code"] for a in first["attempts"]] == [500, 204]
        assert all(a["latency_ms"] >= 50 for a in first["attempts"]), first["attempts"]
        assert first["next_attempt_at"] is None
        assert await deliveries(stack, other, theirs["id"]) == []


async def test_a_partner_sees_and_changes_only_its_own(stack: NotifyStack) -> None:
    partner, other = unique("ptn"), unique("ptn")
    sub = await subscribe(stack, partner, "https://hooks.partner.example/x")
    async with stack.client(other, "partner") as them, stack.client(partner, "partner") as me:
        for method, path in (
            ("GET", f"/v1/subscriptions/{sub['id']}"),
            ("PATCH", f"/v1/subscriptions/{sub['id']}"),
            ("DELETE", f"/v1/subscriptions/{sub['id']}"),
            ("POST", f"/v1/subscriptions/{sub['id']}/rotate-secret"),
            ("GET", "/v1/subscriptions/sub_nope"),
        ):
            answer = await them.request(method, path, json={} if method == "PATCH" else None)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
        assert (await them.get("/v1/subscriptions")).json()["items"] == []
        hidden = await them.get("/v1/deliveries", params={"subscription_id": sub["id"]})
        assert hidden.status_code == 404
        own = (await me.get("/v1/subscriptions")).json()["items"]
        assert [s["id"] for s in own] == [sub["id"]] and "secret" not in own[0]
        # Refused URLs, at subscription time.
        for url, why in (
            ("https://inside.partner.example/x", "private address"),
            ("https://metadata.partner.example/x", "metadata"),
            ("https://mixed.partner.example/x", "metadata"),
            ("https://nowhere.partner.example/x", "does not resolve"),
            ("https://10.0.0.1/x", "private address"),
            ("https://user:pw@hooks.partner.example/x", "body.url"),  # the schema's pattern
        ):
            refused = await me.post(
                "/v1/subscriptions", json={"url": url, "event_types": ["avis.case.submitted.v1"]}
            )
            assert refused.status_code == 422, url
            assert why in refused.text, (url, refused.text)
        moved = await me.patch(
            f"/v1/subscriptions/{sub['id']}", json={"url": "https://inside.partner.example/"}
        )
        assert moved.status_code == 422
    async with stack.client("coord-1", "coordinator") as coordinator:
        seen = await coordinator.get("/v1/subscriptions", params={"partner_id": partner})
        assert [s["id"] for s in seen.json()["items"]] == [sub["id"]]
        assert (await coordinator.get("/v1/subscriptions")).status_code == 422
        refused = await coordinator.post(
            "/v1/subscriptions",
            json={
                "url": "https://hooks.partner.example/",
                "event_types": ["avis.case.submitted.v1"],
            },
        )
        assert refused.status_code == 403
    for role in ("patient", "reviewer", "service"):
        async with stack.client("x", role) as http:  # type: ignore[arg-type]
            assert (await http.get(f"/v1/subscriptions/{sub['id']}")).status_code == 403
    async with stack.client(partner, "partner") as me:
        assert (await me.delete(f"/v1/subscriptions/{sub['id']}")).status_code == 204
        assert (await me.get(f"/v1/subscriptions/{sub['id']}")).status_code == 404


async def test_a_rotated_secret_and_the_old_one_both_verify(stack: NotifyStack) -> None:
    async with hook_receiver() as (receiver, port):
        partner = unique("ptn")
        sub = await subscribe(
            stack, partner, f"http://hooks.partner.example:{port}/r", "avis.case.submitted.v1"
        )
        async with stack.client(partner, "partner") as me:
            rotated = await me.post(f"/v1/subscriptions/{sub['id']}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new != sub["secret"] and new.startswith("whsec_")
        p = stack.patient("fr", partner_id=partner)
        await stack.publish(stack.submitted(p))
        await eventually(lambda: receiver.at("/r", 204), timeout=60)
        (got,) = receiver.at("/r", 204)
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        assert verified(new, got)["subject"] == p.case_id
        assert verified(sub["secret"], got)["subject"] == p.case_id


async def test_dead_after_the_window_then_replayed_disabled_then_reenabled() -> None:
    settings = notify_settings(webhook_retry_window_seconds=1.0, webhook_disable_after_failures=8)
    async with running_notify(settings) as stack, hook_receiver() as (receiver, port):
        partner = unique("ptn")
        sub = await subscribe(
            stack, partner, f"http://hooks.partner.example:{port}/d", "avis.case.submitted.v1"
        )
        receiver.answer["/d"] = 503
        p = stack.patient("fr", partner_id=partner)
        await stack.publish(stack.submitted(p))

        async def dead() -> dict[str, Any] | None:
            items = await deliveries(stack, partner, sub["id"])
            return items[0] if items and items[0]["status"] == "dead" else None

        delivery = await eventually(dead, timeout=60)
        assert len(delivery["attempts"]) >= 2
        assert {a["code"] for a in delivery["attempts"]} == {503}
        assert "gave up" in delivery["attempts"][-1]["reason"]
        ids = {r.headers["webhook-id"] for r in receiver.at("/d")}
        assert ids == {delivery["webhook_id"]}
        # The email went out all the same.
        await stack.settled(p.case_id, 1)
        async with stack.client(partner, "partner") as me:
            url = f"/v1/deliveries/{delivery['id']}/replay"
            receiver.answer.pop("/d")
            replayed = await me.post(url)
            assert replayed.status_code == 202, replayed.text
            assert (await me.post(url)).status_code == 409  # queued, not dead
            await eventually(lambda: receiver.at("/d", 204), timeout=60)
            assert receiver.at("/d", 204)[0].headers["webhook-id"] == delivery["webhook_id"]
            done = (await me.get(f"/v1/deliveries/{delivery['id']}")).json()
            assert done["status"] == "delivered" and done["replays"] == 1

            # Now an endpoint that keeps failing: the subscription is disabled, with why.
            receiver.answer["/d"] = 500
            for _ in range(4):
                q = stack.patient("fr", partner_id=partner)
                await stack.publish(stack.submitted(q))

            async def disabled() -> dict[str, Any] | None:
                s = (await me.get(f"/v1/subscriptions/{sub['id']}")).json()
                return None if s["enabled"] else s

            off = await eventually(disabled, timeout=60)
            assert "failed attempts in a row" in off["disabled_reason"]
            assert off["consecutive_failures"] >= 8
            blocked = await me.post(url)
            assert blocked.status_code == 409  # delivered: not replayable
            # Nothing is sent while it is disabled; re-enabled, it hears the next case.
            receiver.answer.pop("/d")
            before = len(receiver.at("/d"))
            again = await me.patch(f"/v1/subscriptions/{sub['id']}", json={"enabled": True})
            assert again.status_code == 200
            assert again.json()["enabled"] and again.json()["disabled_reason"] is None
            last = stack.patient("fr", partner_id=partner)
            await stack.publish(stack.submitted(last))

            def heard() -> bool:
                return any(
                    json.loads(r.body)["subject"] == last.case_id
                    for r in receiver.at("/d")[before:]
                    if r.status == 204
                )

            await eventually(heard, timeout=60)


async def test_a_dead_or_slow_partner_holds_up_neither_others_nor_emails() -> None:
    settings = notify_settings(
        webhook_timeout_seconds=120,
        webhook_attempt_deadline_seconds=120,  # the slow partner's requests are held that long
        webhook_per_subscription=2,
    )
    async with running_notify(settings) as stack, hook_receiver() as (receiver, port):
        slow, dead, fine = unique("slow"), unique("dead"), unique("fine")
        receiver.hold["/slow"] = asyncio.Event()
        await subscribe(stack, slow, f"http://hooks.partner.example:{port}/slow")
        # Nothing listens on port 9 of loopback: connections are refused at once.
        await subscribe(stack, dead, "http://hooks.partner.example:9/dead")
        good = await subscribe(stack, fine, f"http://hooks.partner.example:{port}/fine")
        cases = [stack.patient("fr", partner_id=who) for who in (slow, slow, slow, dead, fine)]
        for p in cases:
            submitted = stack.submitted(p)
            await stack.publish(submitted, stack.assigned(p, 5, submitted.traceparent))
        # While the slow partner's requests are held open (and the dead one keeps failing),
        # the other partner gets both its deliveries and every patient gets both emails.
        await eventually(lambda: len(receiver.at("/fine", 204)) == 2, timeout=60)
        # (Read through this app's API: another notify app of the module may email them too.)
        for p in cases:
            sent = await stack.settled(p.case_id, 2)
            assert [n["status"] for n in sent] == ["sent", "sent"]
        assert receiver.at("/slow") == []  # still held: nothing answered yet
        assert {d["status"] for d in await deliveries(stack, fine, good["id"])} == {"delivered"}
        receiver.release()
        await eventually(lambda: len(receiver.at("/slow", 204)) == 6, timeout=60)


async def test_no_identity_or_clinical_text_in_bodies_or_headers(stack: NotifyStack) -> None:
    async with hook_receiver() as (receiver, port):
        partner = unique("ptn")
        await subscribe(stack, partner, f"http://hooks.partner.example:{port}/p")
        p = stack.patient(
            "fr",
            partner_id=partner,
            given_name="Éloïse",
            family_name="Dupré-Nuñez",
            phone="+33 6 98 76 54 32",
        )
        submitted = stack.submitted(p)
        tp = submitted.traceparent
        await stack.publish(
            submitted,
            stack.assigned(p, 5, tp),
            stack.report(p, 1, tp),
            stack.withdrawn(p, tp),
        )
        await eventually(lambda: len(receiver.at("/p", 204)) == ALL, timeout=60)
        haystack = b"\n".join(
            r.body + b"\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items()).encode()
            for r in receiver.at("/p")
        )
        secrets = {
            "given name": p.given_name,
            "family name": p.family_name,
            "email": p.email,
            "phone": p.phone,
            "birth date": p.birth_date.isoformat(),
            "birth date fr": p.birth_date.strftime("%d/%m/%Y"),
            "patient id": p.patient_id,
        }
        assert_absent(secrets, {"webhook bodies and headers": haystack})
        for word in ("diagnos", "tumeur", "cancer", "nodule", "biopsy", "oncology"):
            assert word.encode() not in haystack.lower(), word
        # The scan can fail: the case id and reference are there.
        assert p.case_id.encode() in haystack and p.reference.encode() in haystack


# What a schema cannot say: whether a URL's host resolves, and only to public addresses (the
# tests' resolver answers for a few names only), so a schema-valid URL may be refused with 422.
FUZZ_CONFIG = """
[[operations]]
include-name = "POST /v1/subscriptions"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "422"]

[[operations]]
include-name = "PATCH /v1/subscriptions/{subscription_id}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "422"]

# A coordinator lists one partner's subscriptions at a time (a partner, its own): which one
# depends on the token's role, which the schema cannot say.
[[operations]]
include-name = "GET /v1/subscriptions"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "422"]
"""


async def test_openapi_fuzzing_of_subscriptions_and_deliveries_with_each_role(
    stack: NotifyStack,
) -> None:
    partner = "partner-fuzz"
    await subscribe(stack, partner, "https://hooks.partner.example/fuzz")
    for sub, role, seconds in (
        (partner, "partner", 16),
        ("coord-fuzz", "coordinator", 10),
        ("pat-fuzz", "patient", 6),
        ("rev-fuzz", "reviewer", 6),
    ):
        token = stack.token(sub, role)  # type: ignore[arg-type]
        only = ("--include-path-regex", "^/v1/(subscriptions|deliveries)")
        run = await fuzz(
            stack.url, token, *only, config=FUZZ_CONFIG, seed="20260312", max_seconds=seconds
        )
        assert_clean(run)


async def test_a_partner_hears_of_a_request_for_information_and_of_the_review_going_on(
    stack: NotifyStack,
) -> None:
    async with hook_receiver() as (receiver, port):
        partner = unique("ptn")
        hooked = await subscribe(
            stack,
            partner,
            f"http://hooks.partner.example:{port}/info",
            "avis.review.information-requested.v1",
            "avis.review.resumed.v1",
        )
        filed = stack.patient("fr", partner_id=partner, partner_reference="INS-88")
        submitted = stack.submitted(filed)
        await stack.publish(submitted, stack.assigned(filed, 5, submitted.traceparent))
        await stack.settled(filed.case_id, 2)
        await stack.publish(stack.information_requested(filed), stack.resumed(filed, 6))
        await eventually(lambda: len(receiver.at("/info", 204)) == 2, timeout=60)
        bodies = {
            b["type"]: b for b in (verified(hooked["secret"], r) for r in receiver.at("/info"))
        }
        asked = bodies["avis.review.information-requested.v1"]["data"]
        resumed = bodies["avis.review.resumed.v1"]["data"]
        assert (asked["status"], resumed["status"]) == ("awaiting_information", "in_review")
        assert asked["expires_at"] and resumed["due_at"] and resumed["outcome"] == "answered"
        raw = b"".join(r.body for r in receiver.at("/info"))
        assert_absent({"question": "compte rendu opératoire"}, {"webhook bodies": raw})


async def test_a_partner_hears_that_a_second_specialist_reads_the_opinion(
    stack: NotifyStack,
) -> None:
    async with hook_receiver() as (receiver, port):
        partner = unique("ptn")
        hooked = await subscribe(
            stack,
            partner,
            f"http://hooks.partner.example:{port}/second",
            "avis.review.second-reading-requested.v1",
        )
        filed = stack.patient("en", partner_id=partner, partner_reference="INS-89")
        submitted = stack.submitted(filed)
        await stack.publish(submitted, stack.assigned(filed, 5, submitted.traceparent))
        await stack.settled(filed.case_id, 2)
        await stack.publish(stack.second_reading(filed))
        await eventually(lambda: len(receiver.at("/second", 204)) == 1, timeout=60)
        (body,) = (verified(hooked["secret"], r) for r in receiver.at("/second"))
        assert body["type"] == "avis.review.second-reading-requested.v1"
        data = body["data"]
        assert (data["status"], data["reason"], data["version"]) == (
            "in_review",
            "coordinator_rule",
            1,
        )
        assert data["partner_reference"] == "INS-89"
        # No email to the patient for it: the report's email follows.
        assert len(await stack.notifications(filed.case_id)) == 2
