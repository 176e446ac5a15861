"""The whole journey, the four services as separate processes over the real broker, store and
SMTP sink: a partner files the case (with its patient's consent to share), then draft, upload,
submit, assign, decline, reassign, accept, answer, correct and both report versions. The
patient's mailbox then holds exactly the expected emails, in their language, one per
Message-ID; intake shows `report_ready`; the partner's webhook receiver, which fails its first
delivery, holds exactly one verified delivery per subscribed event, the retry under the failed
one's webhook-id; and every case span, Kafka span,
the report's rendering and each email send share the case's trace, while a reviewer's own
request is a trace of its own, linked to the case.

The services export their spans over OTLP/HTTP to a receiver in this test. Set
`AVIS_E2E_OTEL_EXPORTER=zipkin` and `AVIS_E2E_OTEL_ENDPOINT=http://127.0.0.1:9411` to send them
to a Zipkin instead (to look at the trace); the span checks then cannot run and say so.
"""

import asyncio
import contextlib
import os
import random
import string
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI, Request, Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from standardwebhooks.webhooks import Webhook

from avis.shared.topics import (
    AUDIT_ANCHORED,
    CASE_SUBMITTED,
    REPORT_READY,
    REVIEW_ASSIGNED,
    REVIEW_COMPLETED,
)
from tests.support.basics import (
    BOOTSTRAP,
    JWT_SECRET,
    MONGO_URL,
    ROOT,
    SEALING_KEYS,
    eventually,
    kafka_passwords,
    serve,
    skip_history,
    unique,
)
from tests.support.kms import kms_env
from tests.support.notify import body_text, hook_receiver, mailbox
from tests.support.privacy import scan_files, write_in_clear
from tests.support.samples import OPINION, case_body, consent_body, pdf, upload
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.infra

SERVICES = ("intake", "review", "reports", "notify")
GROUP_TOPICS = {
    "intake": [REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY],
    "review": [CASE_SUBMITTED, REPORT_READY],
    "reports": [CASE_SUBMITTED, REVIEW_COMPLETED],
    "notify": [CASE_SUBMITTED, REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY],
}
SMTP_URL = os.environ.get("AVIS_SMTP_URL", "smtp://127.0.0.1:11025")
PARIS = ZoneInfo("Europe/Paris")
HOOK_TYPES = ["avis.case.submitted.v1", "avis.review.assigned.v1", "avis.report.ready.v1"]
CORRECTED = {"further_tests": "PET-CT before surgery, and a lung function test."}


@dataclass
class Span:
    """One span as the receiver got it."""

    service: str
    name: str
    trace_id: str
    span_id: str
    kind: int
    attributes: dict[str, Any]
    links: list[str]  # linked trace ids


@dataclass
class Receiver:
    """An OTLP/HTTP trace receiver: every span the services export."""

    spans: list[Span] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/traces")
        async def traces(request: Request) -> Response:
            message = ExportTraceServiceRequest()
            message.ParseFromString(await request.body())
            for resource in message.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource.resource.attributes}
                for scope in resource.scope_spans:
                    for s in scope.spans:
                        self.spans.append(
                            Span(
                                service=attrs.get("service.name", ""),
                                name=s.name,
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                kind=s.kind,
                                attributes={a.key: _value(a.value) for a in s.attributes},
                                links=[link.trace_id.hex() for link in s.links],
                            )
                        )
            return Response(status_code=200, media_type="application/x-protobuf")

        return app


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@contextlib.asynccontextmanager
async def four_services(receiver: Receiver, copies: int = 1) -> AsyncIterator[ServiceStack]:
    """The four services, each as `copies` processes of its own (one consumer group and one
    database per service), ready; the test's HTTP calls take the copies in turn."""
    for service, topics in GROUP_TOPICS.items():
        await skip_history(f"avis-{service}", topics)  # this journey's events only
    async with serve(receiver.app()) as receiver_url:
        exporter = os.environ.get("AVIS_E2E_OTEL_EXPORTER", "otlp")
        endpoint = os.environ.get("AVIS_E2E_OTEL_ENDPOINT", receiver_url)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "AVIS_KAFKA_BOOTSTRAP": BOOTSTRAP,
            **kafka_passwords(),
            "AVIS_MONGO_URL": MONGO_URL,
            "AVIS_SMTP_URL": SMTP_URL,
            "AVIS_SEALING_KEYS": SEALING_KEYS,
            **kms_env(),
            "AVIS_JWT_SECRET": JWT_SECRET,
            "AVIS_ENV": "development",  # HS256 tokens
            "AVIS_RATE_LIMIT_WRITES": "100000/minute",  # the journey is not to be throttled
            "AVIS_OTEL_EXPORTER": exporter,
            "AVIS_OTEL_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "500",
            "AVIS_LOG_FORMAT": "json",
            "AVIS_RELAY_POLL_SECONDS": "0.3",
            "AVIS_RETRY_BACKOFF_MAX_SECONDS": "1",
            "AVIS_NOTIFY_SENDER_TICK_SECONDS": "0.3",
            # The partner's receiver is on loopback, over plain HTTP: development only.
            "AVIS_NOTIFY_WEBHOOK_ALLOW_HTTP_LOOPBACK": "true",
            "AVIS_NOTIFY_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
            "AVIS_NOTIFY_WEBHOOK_RETRY_MAX_DELAY_SECONDS": "2",
        }
        databases = {s: unique(f"e2e_{s}").replace("-", "_") for s in GROUP_TOPICS}
        with tempfile.TemporaryDirectory(prefix="avis-e2e-") as logs:
            instances = dict.fromkeys(GROUP_TOPICS, copies)
            stack = ServiceStack(env, Path(logs), databases, instances=instances)
            try:
                async with stack.running():
                    yield stack
            finally:
                print(stack.tails(500))


# Two copies of each: matching, the email sender and the webhook worker each run on one copy
# at a time (their leases), while events and HTTP calls reach both.
@pytest.mark.parametrize("copies", [1, 2], ids=["one-copy", "two-copies"])
async def test_the_whole_journey_in_one_trace(copies: int) -> None:
    receiver = Receiver()
    async with four_services(receiver, copies) as stack, hook_receiver() as (hooks, hooks_port):
        hooks.fail_first["/avis"] = 1  # the partner's first delivery fails
        hooks_url = f"http://127.0.0.1:{hooks_port}"
        email = f"{unique('patient')}@exemple.fr"
        # This case's own details, found nowhere in clear at the end (_scan_at_rest).
        mark = "".join(random.choices(string.ascii_lowercase, k=8))
        digits = " ".join(f"{random.randrange(100):02d}" for _ in range(4))
        details = {
            "family name": f"Martin-{mark.capitalize()}",
            "email": email,
            "phone": f"+33 6 {digits}",
            "clinical summary": f"Nodule found on a scan in March ({mark}); biopsy planned.",
            "opinion": f"CT and the biopsy report of {mark} agree.",
            "file name": f"irm-{mark}.pdf",
        }
        record = pdf(f"record-{mark}")
        opinion = {**OPINION, "imaging_and_lab_review": details["opinion"]}
        partner = unique("insurer")
        partner_sub = f"{partner}-api"
        specialty = "oncology"
        p = unique("onc")
        first, second = f"{p}-1", f"{p}-2"
        async with stack.client("review", "coord-e2e", "coordinator") as coordinator:
            for rid in (first, second):
                added = await coordinator.post(
                    "/v1/reviewers",
                    json={
                        "id": rid,
                        "display_name": f"Reviewer {rid}",
                        "specialties": [specialty],
                        "languages": ["fr", "en"],
                        "institution_code": "HOSP-E2E",
                        "capacity": 5,
                    },
                )
                assert added.status_code == 201, added.text

            # The partner subscribes its receiver, then files the case for its patient (who
            # consents to sharing with it): drafts, documents and submits.
            async with stack.client("notify", partner_sub, "partner", partner) as subscriber:
                created = await subscriber.post(
                    "/v1/subscriptions",
                    json={"url": f"{hooks_url}/avis", "event_types": HOOK_TYPES},
                )
                assert created.status_code == 201, created.text
                secret = created.json()["secret"]
            body = case_body(specialty=specialty, partner_reference="INS-E2E-1")
            body["patient"] |= {"email": email, "preferred_language": "fr"}
            body["patient"] |= {"family_name": details["family name"], "phone": details["phone"]}
            body["clinical_summary"] = details["clinical summary"]
            async with stack.client("intake", partner_sub, "partner", partner) as filer:
                draft = await filer.post("/v1/cases", json=body)
                assert draft.status_code == 201, draft.text
                case_id = draft.json()["case_id"]
                document = upload(record, filename=details["file name"])
                stored = await filer.post(f"/v1/cases/{case_id}/documents", **document)
                assert stored.status_code == 201, stored.text
                submitted = await filer.post(
                    f"/v1/cases/{case_id}/submit",
                    json=consent_body("review", "share_with_partner"),
                )
                assert submitted.status_code == 200, submitted.text
                reference = submitted.json()["reference"]

            async def rounds() -> list[dict[str, Any]]:
                page = await coordinator.get("/v1/assignments", params={"case_id": case_id})
                return sorted(page.json()["items"], key=lambda a: a["round"])

            (round_1,) = await eventually(rounds, timeout=60)
            assert round_1["reviewer_id"] == first
            async with stack.client("review", first, "reviewer") as reviewer:
                declined = await reviewer.post(
                    f"/v1/assignments/{round_1['id']}/decline",
                    json={"reason_code": "no_availability", "reason": "Away next week"},
                )
                assert declined.status_code == 200, declined.text
            round_1, round_2 = await eventually(lambda: _two(rounds), timeout=60)
            assert round_2["reviewer_id"] == second
        async with stack.client("review", second, "reviewer") as reviewer:
            url = f"/v1/assignments/{round_2['id']}"
            assert (await reviewer.post(f"{url}/accept")).status_code == 200
            answered = await reviewer.post(f"{url}/opinion", json=opinion)
            assert answered.status_code == 201, answered.text
            corrected = await reviewer.put(f"{url}/opinion", json=opinion | CORRECTED)
            assert corrected.status_code == 200, corrected.text
            assert corrected.json()["version"] == 2

        expected = ["case_received", "review_assigned"]
        if _paris_day(round_1["due_at"]) != _paris_day(round_2["due_at"]):
            expected.append("expected_date_changed")  # the reassignment crossed midnight
        expected += ["report_ready", "report_updated"]
        async with stack.client("notify", "coord-e2e", "coordinator") as coordinator:

            async def notified() -> list[dict[str, Any]] | None:
                page = await coordinator.get("/v1/notifications", params={"case_id": case_id})
                items = page.json().get("items", []) if page.status_code == 200 else []
                done = len(items) >= len(expected) and all(n["status"] == "sent" for n in items)
                return items if done else None

            items = await eventually(notified, timeout=120)
        assert [n["template"] for n in items] == expected
        mails = await eventually(lambda: len(mailbox(email)) >= len(expected) and mailbox(email))
        await asyncio.sleep(1.0)
        mails = mailbox(email)
        ids = [str(m["Message-ID"]).strip() for m in mails]
        assert len(ids) == len(set(ids)) == len(expected)
        assert sorted(ids) == sorted(n["message_id"] for n in items)
        assert {m["Content-Language"] for m in mails} == {"fr"}
        assert all(body_text(m).startswith("Bonjour,") for m in mails)
        assert all(reference in str(m["Subject"]) for m in mails)

        async with stack.client("intake", partner_sub, "partner", partner) as filer:

            async def report_ready() -> bool:
                case = (await filer.get(f"/v1/cases/{case_id}")).json()
                return bool(case["status"] == "report_ready")

            await eventually(report_ready, timeout=60)

        # The partner's receiver: one failed first delivery, then exactly one successful
        # delivery per subscribed event, each verified with the Standard Webhooks library; the
        # retry carries the failed delivery's webhook-id.
        wanted = ["avis.case.submitted.v1", "avis.review.assigned.v1", "avis.review.assigned.v1"]
        wanted += ["avis.report.ready.v1", "avis.report.ready.v1"]
        await eventually(lambda: len(hooks.at("/avis", 204)) >= len(wanted), timeout=60)
        await asyncio.sleep(1.0)  # nothing more arrives
        (failed,) = hooks.at("/avis", 500)
        delivered = hooks.at("/avis", 204)
        bodies = [Webhook(secret).verify(r.body, r.headers) for r in delivered]
        assert sorted(b["type"] for b in bodies) == sorted(wanted)
        hook_ids = [r.headers["webhook-id"] for r in delivered]
        assert len(set(hook_ids)) == len(wanted)
        assert failed.headers["webhook-id"] in hook_ids
        retry = delivered[hook_ids.index(failed.headers["webhook-id"])]
        assert retry.body == failed.body
        assert {b["subject"] for b in bodies} == {case_id}
        assert {b["data"]["partner_reference"] for b in bodies} == {"INS-E2E-1"}
        assert email.encode() not in b"".join(r.body for r in hooks.received)

        # The spans of all four services: let the last batches arrive.
        def have(name: str) -> bool:
            return any(s.name == name for s in receiver.spans)

        def sends() -> int:
            return sum(s.name == "notify.email.send" for s in receiver.spans)

        if os.environ.get("AVIS_E2E_OTEL_EXPORTER", "otlp") == "otlp":
            await eventually(lambda: have("review.opinion") and sends() >= len(expected))
            await asyncio.sleep(1.0)  # a send more would be exported by now
        await _scan_at_rest(stack.logs, details, {"record's bytes": record})
    if os.environ.get("AVIS_E2E_OTEL_EXPORTER", "otlp") != "otlp":
        pytest.skip("spans went to the configured exporter; the trace checks need the receiver")
    _check_one_trace(receiver.spans, case_id, expected)


async def _scan_at_rest(logs: Path, details: dict[str, str], binaries: dict[str, bytes]) -> None:
    """No file of the broker, the store, the identity provider, the key server, the services'
    logs or the SMTP sink holds the case's details in clear (the sink holds the address, in
    `To`), while values written in clear on purpose, the positive control, are found there."""
    state = Path(os.environ.get("AVIS_STATE_DIR", ROOT / ".local/test"))
    places = {
        "broker": [state / "kafka"],
        "store": [state / "ferretdb"],
        "services' logs": [logs],
        "identity provider": [state / "oidc", state / "kratos"],
        "key server": [state / "kms"],
        "SMTP sink": [state / "smtp"],
    }
    control = {"control text": unique("Temoin-en-clair")}
    control_bytes = {"control bytes": os.urandom(64)}
    await write_in_clear(control["control text"], control_bytes["control bytes"], logs)
    for where, roots in places.items():
        found = scan_files(roots, control, control_bytes)
        if where in ("broker", "store"):
            assert set(found) == {"control text", "control bytes"}, (where, found)
        if where == "services' logs":
            assert set(found) == {"control text"}, (where, found)
        secrets = {k: v for k, v in details.items() if not (where == "SMTP sink" and k == "email")}
        assert not scan_files(roots, secrets, binaries), where


async def _two(rounds: Any) -> list[dict[str, Any]] | None:
    items = await rounds()
    return items if len(items) == 2 else None


def _paris_day(at: str) -> Any:
    return datetime.fromisoformat(at).astimezone(PARIS).date()


def _check_one_trace(spans: list[Span], case_id: str, notifications: list[str]) -> None:
    by_name: dict[str, list[Span]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    (submit,) = by_name["intake.case.submit"]
    case_trace = submit.trace_id
    must = ["review.assign", "review.decline", "review.accept", "review.opinion"]
    must += ["notify.case.submitted", "notify.review.assigned", "notify.email.send"]
    must += ["notify.report.ready"]
    for name in must:
        assert name in by_name, (name, sorted(by_name))
        assert {s.trace_id for s in by_name[name]} == {case_trace}, name
    # Every Kafka produce and consume span of every service is in the case's trace, but for
    # the trails' anchors: a periodic publication of many cases' heads, traced on its own.
    kafka = [s for s in spans if s.kind in (4, 5)]  # PRODUCER, CONSUMER
    kafka = [s for s in kafka if not s.name.startswith(f"{AUDIT_ANCHORED} ")]
    assert {s.service for s in kafka} >= {
        "avis-intake",
        "avis-review",
        "avis-reports",
        "avis-notify",
    }
    assert {s.trace_id for s in kafka} == {case_trace}, [
        (s.service, s.name) for s in kafka if s.trace_id != case_trace
    ]
    # Each email send is there, once per notification, in the case's trace.
    sends = by_name["notify.email.send"]
    assert all(s.attributes.get("avis.case_id") == case_id for s in sends)
    sent = sorted(str(s.attributes.get("avis.notification")) for s in sends)
    assert sent == sorted(notifications), sent
    # A reviewer's own request is its own trace, linked from the case span it caused.
    accept_requests = [
        s
        for s in spans
        if s.kind == 2 and s.service == "avis-review" and s.name.endswith("/accept")
    ]
    assert accept_requests, sorted(by_name)
    (accept,) = by_name["review.accept"]
    request_trace = accept_requests[0].trace_id
    assert request_trace != case_trace
    assert request_trace in accept.links
    rendering = [s for s in spans if s.service == "avis-reports" and "render" in s.name]
    assert rendering and {s.trace_id for s in rendering} == {case_trace}
