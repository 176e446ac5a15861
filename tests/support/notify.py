"""The notify app served on loopback over the real broker, store and SMTP sink, and what tests
need around it: a publisher of the other services' events, the patient's mailbox in the sink,
and the sink's control file."""

import asyncio
import contextlib
import email
import email.policy
import functools
import json
import os
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from opentelemetry import trace
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from avis.notify.main import create_app
from avis.notify.sender import EmailSender
from avis.notify.service import NotifyService
from avis.notify.settings import Settings
from avis.shared.case_keys import CaseKeys
from avis.shared.envelope import Event, new_event_id
from avis.shared.events import (
    CaseClaimed,
    CaseSubmitted,
    CaseWithdrawn,
    ConsentScope,
    InformationQuestion,
    InformationRequested,
    Language,
    PatientContact,
    PhysicianContact,
    ProfessionalContact,
    Question,
    ReportReady,
    ReviewAssigned,
    ReviewResumed,
    SecondReadingRequested,
    Specialty,
    Urgency,
)
from avis.shared.kafka import InboxUse
from avis.shared.keys import KmipKeyService
from avis.shared.mongo import Document
from avis.shared.runtime import Runtime
from avis.shared.sealing import Keyring
from avis.shared.security import Role, mint_token
from avis.shared.topics import CASE_SUBMITTED, REPORT_READY, REVIEW_ASSIGNED
from tests.support import kms
from tests.support.basics import (
    MONGO_URL,
    ROOT,
    SEALING_KEYS,
    consumed,
    eventually,
    make_settings,
    publish,
    serve,
    skip_history,
    unique,
)

STATE = pathlib.Path(os.environ.get("AVIS_STATE_DIR", ROOT / ".local/test"))
MAIL_DIR = STATE / "smtp" / "mail"
CONTROL = STATE / "smtp" / "control.json"
FAST_RETRIES = "0.3,0.6,0.9"

# What the tests' webhook endpoints resolve to. Nothing in a test resolves a name for real or
# connects beyond loopback: names in this table are answered here, every other name does not
# resolve.
RESOLVE: dict[str, list[str]] = {
    "hooks.partner.example": ["127.0.0.1"],
    "other.partner.example": ["127.0.0.1"],
    "inside.partner.example": ["10.20.30.40"],
    "metadata.partner.example": ["169.254.169.254"],
    "mixed.partner.example": ["127.0.0.1", "fd00:ec2::254"],
}


async def stub_resolver(host: str, port: int) -> list[str]:
    """The tests' resolver (see RESOLVE)."""
    if host in RESOLVE:
        return RESOLVE[host]
    raise OSError(f"{host} does not resolve (test resolver)")


def notify_settings(**overrides: Any) -> Settings:
    """Notify settings on the test stack, with a service name, group and database of its own."""
    values: dict[str, Any] = {
        "retry_schedule": FAST_RETRIES,
        "sender_tick_seconds": 0.2,
        "due_bucket_seconds": 2,
        "webhook_allow_http_loopback": True,
        "webhook_retry_base_seconds": 0.2,
        "webhook_retry_max_delay_seconds": 0.5,
        "webhook_retry_window_seconds": 60,
        "webhook_timeout_seconds": 2,
        "webhook_connect_timeout_seconds": 1,
    } | overrides
    return make_settings(unique("notify"), Settings, **values)


def mailbox(address: str) -> list[EmailMessage]:
    """Every message the sink kept for `address`, oldest first (the sink names them so)."""
    found = []
    for path in sorted(MAIL_DIR.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        if address in str(msg.get("To", "")):
            found.append(msg)
    return found


def raw_mails(address: str) -> list[bytes]:
    """The raw bytes of every message kept for `address`."""
    return [p.read_bytes() for p in MAIL_DIR.glob("*.eml") if address.encode() in p.read_bytes()]


@contextlib.contextmanager
def sink_rules(*rules: dict[str, Any]) -> Any:
    """The SMTP sink misbehaves as `rules` say (see deploy/local/smtp_sink.py) in this block."""
    CONTROL.parent.mkdir(parents=True, exist_ok=True)
    CONTROL.write_text(json.dumps({"rules": list(rules)}), encoding="utf-8")
    try:
        yield
    finally:
        CONTROL.unlink(missing_ok=True)


def body_text(msg: EmailMessage) -> str:
    """The text/plain part."""
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def html_text(msg: EmailMessage) -> str:
    """The text/html part."""
    part = msg.get_body(("html",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


@dataclass
class Patient:
    """A patient of one test: their case, their address and their language."""

    case_id: str
    email: str
    language: Language
    patient_id: str
    given_name: str = "Camille"
    family_name: str = "Durand-Lefèvre"
    phone: str = "+33 6 12 34 56 78"
    birth_date: date = date(1979, 5, 17)
    reference: str = ""
    partner_id: str | None = None  # the partner that filed the case, if one did
    partner_reference: str | None = None
    share_with_partner: bool = True
    # The case's key in the key server and intake's ring led by it (None: the service keyring).
    key_ref: str | None = None
    ring: Keyring | None = None
    # The treating physician the patient consented to send the report to, and their
    # institution's code (None: no physician's copy).
    physician: PhysicianContact | None = None
    physician_institution: str | None = None


def contact_of(p: Patient) -> PatientContact:
    """The patient's contact, as intake seals it in its events."""
    return PatientContact(
        given_name=p.given_name,
        family_name=p.family_name,
        email=p.email,
        phone=p.phone,
        birth_date=p.birth_date,
        preferred_language=p.language,
    )


@dataclass
class NotifyStack:
    """The notify app on loopback, its database, and a publisher of the other services' events."""

    url: str
    settings: Settings
    db: AsyncDatabase[Document]
    publisher: Runtime
    notify: NotifyService
    sender: EmailSender
    runtime: Runtime  # notify's own
    keyring: Keyring = field(default_factory=lambda: Keyring.parse(SEALING_KEYS))
    # The case keys as intake makes and destroys them, with its own certificate.
    keys: CaseKeys = field(
        default_factory=lambda: CaseKeys(
            Keyring.parse(SEALING_KEYS), KmipKeyService(kms.endpoint("intake"))
        )
    )

    def token(self, sub: str, role: Role) -> str:
        """A valid token for `sub` in `role` (a partner acts for a partner of the same name)."""
        return mint_token(self.settings, sub, role, partner_id=sub if role == "partner" else None)

    def client(self, sub: str = "coord-1", role: Role = "coordinator") -> httpx.AsyncClient:
        """An HTTP client of the app, authenticated as `sub` in `role`."""
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token(sub, role)}"},
            timeout=30.0,
        )

    def patient(self, language: str = "fr", **fields: Any) -> Patient:
        """A new patient with a case of their own."""
        case_id = unique("case")
        return Patient(
            case_id=case_id,
            email=f"{unique('patient')}@exemple.fr",
            language=Language(language),
            patient_id=unique("pat"),
            reference=f"AV-2026-{abs(hash(case_id)) % 1_000_000:06d}",
            **fields,
        )

    async def keyed(self, p: Patient) -> Patient:
        """Give the patient's case a key of its own in the key server, as intake does."""
        p.key_ref = await self.keys.create(p.case_id)
        p.ring = await self.keys.ring(p.key_ref)
        return p

    def erased(self, p: Patient) -> Event:
        """`avis.case.erased.v1`, as intake publishes it once it destroyed the case's key."""
        return kms.erased_event(p.case_id, p.key_ref)

    async def noticed_erasure(self, p: Patient) -> tuple[Event, str]:
        """`avis.case.erased.v1` with its notice, as intake publishes it: the patient's contact
        under a new key of its own in the key server, bound to the event; and that key's ref."""
        event_id = new_event_id()
        notice_ref = await self.keys.create(f"{p.case_id}:erasure-notice")
        assert notice_ref is not None and notice_ref != p.key_ref
        notice = (await self.keys.ring(notice_ref)).seal_json(contact_of(p), aad=event_id)
        return kms.erased_event(p.case_id, p.key_ref, notice=notice, event_id=event_id), notice_ref

    def submitted(self, p: Patient) -> Event:
        """`avis.case.submitted.v1` for the patient, as intake publishes it, in a new trace."""
        event_id = new_event_id()
        contact = contact_of(p)
        payload = CaseSubmitted(
            case_id=p.case_id,
            reference=p.reference,
            specialty=Specialty.ONCOLOGY,
            urgency=Urgency.ROUTINE,
            language=p.language,
            questions=[Question.DIAGNOSIS_CLARIFICATION],
            patient_id=p.patient_id,
            partner_id=p.partner_id if p.share_with_partner else None,
            partner_reference=p.partner_reference if p.share_with_partner else None,
            consent_scopes=[ConsentScope.REVIEW]
            + ([ConsentScope.SHARE_WITH_PARTNER] if p.share_with_partner else []),
            document_count=1,
            submitted_at=datetime.now(UTC),
            case_url=f"http://127.0.0.1:8001/v1/cases/{p.case_id}",
            contact=(p.ring or self.keyring).seal_json(contact, aad=event_id),
            key_ref=p.key_ref,
            physician=(p.ring or self.keyring).seal_json(p.physician, aad=event_id)
            if p.physician is not None
            else None,
            physician_institution=p.physician_institution,
        )
        with trace.get_tracer("tests").start_as_current_span("intake.case.submit"):
            return Event.new(payload, "/avis/intake", event_id=event_id)

    def assigned(
        self,
        p: Patient,
        due_in_days: float,
        traceparent: str = "",
        at: datetime | None = None,
        international: bool = False,
    ) -> Event:
        """`avis.review.assigned.v1` made `at` (now by default), due `due_in_days` after it
        (`international`: to a specialist who does not read the patient's language)."""
        now = at or datetime.now(UTC)
        payload = ReviewAssigned(
            case_id=p.case_id,
            assignment_id=unique("asg"),
            reviewer_id="rev-1",
            specialty=Specialty.ONCOLOGY,
            assigned_at=now,
            due_at=now + timedelta(days=due_in_days),
            international=international,
        )
        return _under(traceparent, lambda: Event.new(payload, "/avis/review"))

    def information_requested(self, p: Patient, expires_in_days: float = 14) -> Event:
        """`avis.review.information-requested.v1`, its question sealed under the event id."""
        at, event_id = datetime.now(UTC), new_event_id()
        payload = InformationRequested(
            case_id=p.case_id,
            assignment_id=f"{p.case_id}-0001",
            reviewer_id="rev-1",
            request_id=f"{p.case_id}-0001-q01",
            requested_at=at,
            expires_at=at + timedelta(days=expires_in_days),
            question=(p.ring or self.keyring).seal_json(
                InformationQuestion(text="Le compte rendu opératoire, s'il vous plaît."),
                aad=event_id,
            ),
            seq=3,
        )
        return Event.new(payload, "/avis/review", event_id=event_id)

    def second_reading(
        self, p: Patient, version: int = 1, to: ProfessionalContact | None = None
    ) -> Event:
        """`avis.review.second-reading-requested.v1`: a second specialist reads the opinion
        (`to`: their address, sealed for the event as review seals it)."""
        event_id = new_event_id()
        ring = p.ring or self.keyring
        payload = SecondReadingRequested(
            case_id=p.case_id,
            assignment_id=f"{p.case_id}-0001",
            reviewer_id="rev-1",
            second_reader_id="rev-2",
            version=version,
            requested_at=datetime.now(UTC),
            reason="coordinator_rule",
            recipient=ring.seal_json(to, aad=event_id) if to is not None else None,
            seq=4,
        )
        return Event.new(payload, "/avis/review", event_id=event_id)

    def resumed(self, p: Patient, due_in_days: float, outcome: str = "answered") -> Event:
        """`avis.review.resumed.v1`: the review goes on, due `due_in_days` from now."""
        at = datetime.now(UTC)
        payload = ReviewResumed(
            case_id=p.case_id,
            assignment_id=f"{p.case_id}-0001",
            reviewer_id="rev-1",
            request_id=f"{p.case_id}-0001-q01",
            resumed_at=at,
            due_at=at + timedelta(days=due_in_days),
            paused_seconds=3600.0,
            outcome=outcome,  # type: ignore[arg-type]
            seq=4,
        )
        return Event.new(payload, "/avis/review")

    def report(
        self,
        p: Patient,
        version: int,
        traceparent: str = "",
        reports_url: str = "http://127.0.0.1:8003",
    ) -> Event:
        """`avis.report.ready.v1` of one version, announced by the reports at `reports_url`."""
        payload = ReportReady(
            case_id=p.case_id,
            report_id=f"rep-{p.case_id}",
            version=version,
            languages=[p.language],
            formats=["json", "pdf"],
            ready_at=datetime.now(UTC),
            report_url=f"{reports_url}/v1/reports/rep-{p.case_id}?version={version}",
        )
        return _under(traceparent, lambda: Event.new(payload, "/avis/reports"))

    def withdrawn(self, p: Patient, traceparent: str = "") -> Event:
        """`avis.case.withdrawn.v1`."""
        payload = CaseWithdrawn(case_id=p.case_id, withdrawn_at=datetime.now(UTC))
        return _under(traceparent, lambda: Event.new(payload, "/avis/intake"))

    def claimed(self, p: Patient, patient_id: str) -> Event:
        """`avis.case.claimed.v1`: the patient of a partner-filed case claimed it."""
        payload = CaseClaimed(
            case_id=p.case_id, patient_id=patient_id, claimed_at=datetime.now(UTC)
        )
        return Event.new(payload, "/avis/intake")

    async def publish(self, *events: Event) -> None:
        """Publish on the real topics, each acknowledged before the next."""
        for event in events:
            await publish(self.publisher, event)

    async def consumed(self, *events: Event, timeout: float = 30.0) -> None:
        """Wait until notify has stored its effect of each of `events`: for its case events,
        the event's id among those its case applied or parked (no inbox marker is written for
        them: `InboxUse.OWN`); for the others, its inbox marker."""
        marked = [e for e in events if self.runtime.inbox_use(e.type) is not InboxUse.OWN]
        await consumed(self.settings, self.publisher.broker, self.db, *marked, timeout=timeout)
        for event in events:
            if event not in marked:
                await eventually(functools.partial(self.recorded, event), timeout=timeout)

    async def recorded(self, event: Event) -> bool:
        """Whether the event's case applied it, or parked it until the case comes."""
        doc = await self.db["cases"].find_one({"_id": event.subject}) or {}
        parked = [e.get("id") for e in doc.get("parked", [])]
        return event.id in doc.get("applied", []) or event.id in parked

    async def notifications(self, case_id: str) -> list[dict[str, Any]]:
        """The case's notifications, read through the API as a coordinator."""
        async with self.client() as http:
            response = await http.get("/v1/notifications", params={"case_id": case_id})
        if response.status_code == 404:
            return []
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def settled(
        self, case_id: str, count: int, timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """The case's notifications once `count` exist and none is queued any more."""

        async def check() -> list[dict[str, Any]] | None:
            items = await self.notifications(case_id)
            done = len(items) >= count and all(n["status"] != "queued" for n in items)
            return items if done else None

        return list(await eventually(check, timeout=timeout))


def _under(traceparent: str, make: Any) -> Event:
    """Build an event inside the given trace (as the producing service would), or a new one."""
    from opentelemetry import context, propagate

    if not traceparent:
        return make()  # type: ignore[no-any-return]
    token = context.attach(propagate.extract({"traceparent": traceparent}))
    try:
        return make()  # type: ignore[no-any-return]
    finally:
        context.detach(token)


@contextlib.asynccontextmanager
async def running_notify(settings: Settings | None = None) -> AsyncIterator[NotifyStack]:
    """A notify app over the test stack, with a publisher beside it."""
    settings = settings or notify_settings()
    await skip_history(
        f"avis-{settings.service_name}", [CASE_SUBMITTED, REVIEW_ASSIGNED, REPORT_READY]
    )
    publisher = Runtime(make_settings())
    await publisher.start()
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(MONGO_URL, tz_aware=True)
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    app.state.notify.webhooks.resolver = stub_resolver
    try:
        async with serve(app) as url:
            await eventually(lambda: publisher.kafka_started and runtime.kafka_started, timeout=60)
            yield NotifyStack(
                url,
                settings,
                mongo[settings.database],
                publisher,
                app.state.notify,
                app.state.sender,
                runtime,
            )
    finally:
        await publisher.stop()
        await mongo.drop_database(settings.database)
        await mongo.close()


def slowly_retrying_notify() -> contextlib.AbstractAsyncContextManager[NotifyStack]:
    """A notify app whose failed sends wait long enough in the queue to be erased there: a
    transient failure is tried again only after 30 s."""
    return running_notify(notify_settings(retry_schedule="30,30,30"))


@dataclass
class Received:
    """One request a test endpoint got, and what it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class HookReceiver:
    """Partners' webhook endpoints, a real HTTP server on loopback: each path answers 204,
    or fails its first `fail_first[path]` requests with 500, or always answers
    `answer[path]`, or holds each request until `hold[path]` is set; and answers no sooner than
    `delay[path]` seconds after the request came. It counts the requests in flight at each
    path (and the most at once), and answers a GET with a FHIR document (`documents`: the
    paths read), as the reports service does the physician's link."""

    received: list[Received] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    most_at_once: dict[str, int] = field(default_factory=dict)
    documents: list[str] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)
    answer: dict[str, int] = field(default_factory=dict)
    hold: dict[str, Any] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)

    def app(self) -> Any:
        from fastapi import FastAPI, Request, Response

        app = FastAPI()

        @app.post("/{path:path}")
        async def hook(path: str, request: Request) -> Response:
            body = await request.body()
            path = f"/{path}"
            self.in_flight[path] = self.in_flight.get(path, 0) + 1
            self.most_at_once[path] = max(self.most_at_once.get(path, 0), self.in_flight[path])
            try:
                if path in self.hold:
                    await self.hold[path].wait()
                await asyncio.sleep(self.delay.get(path, 0))
            finally:
                self.in_flight[path] -= 1
            status = self.answer.get(path, 204)
            if self.fail_first.get(path, 0) > 0:
                self.fail_first[path] -= 1
                status = 500
            self.received.append(Received(path, dict(request.headers), body, status))
            return Response(status_code=status)

        @app.get("/{path:path}")
        async def document(path: str) -> Response:
            self.documents.append(f"/{path}")
            bundle = {"resourceType": "Bundle", "type": "document", "entry": []}
            return Response(json.dumps(bundle), media_type="application/fhir+json")

        return app

    def at(self, path: str, status: int | None = None) -> list[Received]:
        """What `path` received (answered with `status`, if given), oldest first."""
        return [
            r for r in self.received if r.path == path and (status is None or r.status == status)
        ]

    def release(self) -> None:
        """Let every held request go."""
        for event in self.hold.values():
            event.set()


@contextlib.asynccontextmanager
async def hook_receiver(port: int = 0) -> AsyncIterator[tuple[HookReceiver, int]]:
    """A HookReceiver served on loopback (on `port`, or a free one); yields it and its port."""
    receiver = HookReceiver()
    async with serve(receiver.app(), port) as url:
        try:
            yield receiver, int(url.rsplit(":", 1)[1])
        finally:
            receiver.release()  # before the server stops: it waits for open requests


async def subscribe(stack: NotifyStack, partner: str, url: str, *types: str) -> dict[str, Any]:
    """Subscribe `url` for `partner` (all event types unless given); returns the answer."""
    types = types or (
        "avis.case.submitted.v1",
        "avis.review.assigned.v1",
        "avis.report.ready.v1",
        "avis.case.withdrawn.v1",
    )
    async with stack.client(partner, "partner") as http:
        created = await http.post(
            "/v1/subscriptions", json={"url": url, "event_types": list(types)}
        )
    assert created.status_code == 201, created.text
    return dict(created.json())


async def deliveries(stack: NotifyStack, partner: str, subscription_id: str) -> list[Any]:
    """A subscription's deliveries, newest first, read as its partner."""
    async with stack.client(partner, "partner") as http:
        page = await http.get(
            "/v1/deliveries", params={"subscription_id": subscription_id, "limit": 100}
        )
    assert page.status_code == 200, page.text
    return list(page.json()["items"])
