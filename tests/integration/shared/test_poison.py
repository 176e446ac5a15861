"""Poison and malformed messages on every topic, for every consumer group that reads it, against
the four services on the real broker and store.

Each topic gets one batch of poison (bytes that are not JSON, a future schema version, no
CloudEvents headers, a payload over the size limit, a header that is not UTF-8, a payload that
breaks its schema), then a good event under the same key, so on the same partition, behind it.
Each group must apply the good event (it kept consuming) and send every poison to `<topic>.dlq`
with its reason and its own group. Events for a case nobody knows: intake dead-letters them at
once (it files every case); reports and notify park them, then dead-letter them once the bound
has passed, and a replay applies them once the case exists. Each service reports the depth of
the dead-letter topics it reads as `avis_dlq_depth`.
"""

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from avis.intake.main import create_app as intake_app
from avis.notify.main import create_app as notify_app
from avis.reports.main import create_app as reports_app
from avis.review.main import create_app as review_app
from avis.shared.envelope import MAX_EVENT_BYTES, Event, new_event_id
from avis.shared.events import (
    CaseSubmitted,
    ConsentScope,
    Language,
    PatientContact,
    Question,
    ReportReady,
    ReviewAssigned,
    ReviewCompleted,
    Specialty,
    Urgency,
)
from avis.shared.kafka import InboxUse, dlq_depths, replay
from avis.shared.parking import PARKED
from avis.shared.runtime import Runtime
from avis.shared.sealing import Keyring
from avis.shared.settings import CommonSettings
from avis.shared.topics import CASE_SUBMITTED, REPORT_READY, REVIEW_ASSIGNED, REVIEW_COMPLETED, dlq
from tests.support.basics import (
    KAFKA,
    MONGO_URL,
    eventually,
    serve,
    skip_history,
    unique,
)
from tests.support.intake import Intake, intake_settings
from tests.support.notify import notify_settings
from tests.support.reports import reports_settings
from tests.support.review import review_settings
from tests.support.samples import case_body, completed_opinion, consent_body, pdf, upload
from tests.support.topics import TopicReader

pytestmark = pytest.mark.infra

# Short enough for a test, long enough that no event waits it out by accident.
PARKING = {"park_max_hours": 4 / 3600, "park_sweep_seconds": 0.5, "dlq_depth_seconds": 0.5}
READERS = {
    CASE_SUBMITTED: ("review", "reports", "notify"),
    REVIEW_ASSIGNED: ("intake", "notify"),
    REVIEW_COMPLETED: ("intake", "reports"),
    REPORT_READY: ("intake", "notify"),
}
PAIRS = [(topic, service) for topic, services in READERS.items() for service in services]
TYPE_ON = {
    CASE_SUBMITTED: "avis.case.submitted.v1",
    REVIEW_ASSIGNED: "avis.review.assigned.v1",
    REVIEW_COMPLETED: "avis.review.completed.v1",
    REPORT_READY: "avis.report.ready.v1",
}
# poison name -> the start of the reason its dead letter must give
REASONS = {
    "not-json": b"undecodable body",
    "future-version": b"unknown event type 'avis.",
    "no-headers": b"not a CloudEvent: missing headers ce_specversion, ce_id, ce_type",
    "oversize": b"oversize payload",
    "header-not-utf8": b"header 'ce_source' is not UTF-8",
    "breaks-schema": b"invalid avis.",
    "header-null": b"not a CloudEvent: missing headers ce_id",
}


@dataclass
class Service:
    """One service of the platform under test."""

    name: str
    app: FastAPI
    settings: CommonSettings
    url: str = ""

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    @property
    def group(self) -> str:
        return f"avis-{self.settings.service_name}"


@dataclass
class Platform:
    """The four services, a producer for raw records, and one case intake filed."""

    services: dict[str, Service]
    producer: AIOKafkaProducer
    keyring: Keyring
    known_case: str
    batches: dict[str, tuple[str, str, Event]]  # topic -> (key, batch id, good event)


@contextlib.asynccontextmanager
async def running(name: str, make: Callable[[Any], FastAPI], settings: CommonSettings,
                  topics: list[str]) -> AsyncIterator[Service]:  # fmt: skip
    await skip_history(f"avis-{settings.service_name}", topics)
    app = make(settings)
    service = Service(name, app, settings)
    try:
        async with serve(app) as url:
            service.url = url
            await eventually(
                lambda: service.runtime.kafka_started and service.runtime.store_initialised,
                timeout=60,
            )
            yield service
    finally:
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
        await mongo.drop_database(settings.database)
        await mongo.close()


def topics_of(service: str) -> list[str]:
    return [topic for topic, readers in READERS.items() if service in readers]


@pytest.fixture(scope="module")
async def platform() -> AsyncIterator[Platform]:
    async with contextlib.AsyncExitStack() as stack:
        made = [
            ("intake", intake_app, intake_settings(**PARKING)),
            ("review", review_app, review_settings(**PARKING)),
            ("reports", reports_app, reports_settings(**PARKING)),
            ("notify", notify_app, notify_settings(**PARKING)),
        ]
        services = {}
        for name, make, settings in made:
            services[name] = await stack.enter_async_context(
                running(name, make, settings, topics_of(name))
            )
        producer = AIOKafkaProducer(**KAFKA.options(), acks="all")
        await producer.start()
        stack.push_async_callback(producer.stop)
        intake = services["intake"]
        keyring = Keyring.from_settings(intake.settings)
        known = await file_case(Intake(intake.url, intake.app, intake.settings))
        for name in ("reports", "notify"):
            await eventually(lambda name=name: knows(services[name], known), timeout=60)
        yield Platform(services, producer, keyring, known, {})


async def file_case(intake: Intake) -> str:
    """A case drafted, given a record and submitted through intake's own HTTP door."""
    patient = intake.client()
    created = await patient.post("/v1/cases", json=case_body())
    assert created.status_code == 201, created.text
    case_id: str = created.json()["case_id"]
    stored = await patient.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))
    assert stored.status_code == 201, stored.text
    submitted = await patient.post(f"/v1/cases/{case_id}/submit", json=consent_body())
    assert submitted.status_code == 200, submitted.text
    await patient.aclose()
    return case_id


async def knows(service: Service, case_id: str) -> bool:
    """Whether reports or notify holds the case's submission."""
    doc = await service.runtime.db["cases"].find_one({"_id": case_id})
    if doc is None:
        return False
    return bool(doc.get("case") or doc.get("submitted"))


async def taken_in(service: Service, event: Event) -> bool:
    """Whether the service has stored its effect of the event: its inbox marker, or, for an
    event whose case records it (notify's: `InboxUse.OWN`), its id among those the case
    applied or parked."""
    if service.runtime.inbox_use(event.type) is not InboxUse.OWN:
        return await service.runtime.messaging.processed(event)
    doc = await service.runtime.db["cases"].find_one({"_id": event.subject}) or {}
    parked = [e.get("id") for e in doc.get("parked") or []]
    return event.id in (doc.get("applied") or []) or event.id in parked


def good_event(platform: Platform, topic: str, case_id: str) -> Event:
    """A valid event of `topic` for `case_id`, sealed where its payload seals."""
    now = datetime.now(UTC)
    event_id = new_event_id()
    seal = platform.keyring.seal_json
    payload: Any
    if topic == CASE_SUBMITTED:
        contact = PatientContact(
            given_name="Alix",
            family_name="Durand",
            email=f"{unique('p')}@example.org",
            birth_date=date(1980, 5, 17),
            preferred_language=Language.EN,
        )
        payload = CaseSubmitted(
            case_id=case_id,
            reference="AV-2026-999999",
            specialty=Specialty.ONCOLOGY,
            urgency=Urgency.ROUTINE,
            language=Language.EN,
            questions=[Question.DIAGNOSIS_CLARIFICATION],
            consent_scopes=[ConsentScope.REVIEW],
            document_count=1,
            submitted_at=now,
            case_url=f"http://intake.test/v1/cases/{case_id}",
            contact=seal(contact, aad=event_id),
        )
    elif topic == REVIEW_ASSIGNED:
        payload = ReviewAssigned(
            case_id=case_id,
            assignment_id=f"{case_id}-0001",
            reviewer_id=unique("r"),
            specialty=Specialty.ONCOLOGY,
            assigned_at=now,
            due_at=now + timedelta(days=5),
        )
    elif topic == REVIEW_COMPLETED:
        payload = ReviewCompleted(
            case_id=case_id,
            assignment_id=f"{case_id}-0001",
            reviewer_id=unique("r"),
            specialty=Specialty.ONCOLOGY,
            version=1,
            completed_at=now,
            opinion=seal(completed_opinion(Language.EN), aad=event_id),
        )
    else:
        payload = ReportReady(
            case_id=case_id,
            report_id=str(uuid.uuid4()),
            version=1,
            languages=[Language.EN],
            formats=["json"],
            ready_at=now,
            report_url=f"http://reports.test/v1/reports/{case_id}",
        )
    return Event.new(payload, "/avis/test", event_id=event_id)


def headers_of(event: Event, **changes: str) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in (event.headers() | changes).items()]


async def send_batch(platform: Platform, topic: str) -> tuple[str, str, Event]:
    """The poison of `topic`, then a good event behind it on the same partition."""
    key = unique("case") if topic == CASE_SUBMITTED else platform.known_case
    batch = uuid.uuid4().hex
    good = good_event(platform, topic, key)
    future = TYPE_ON[topic].replace(".v1", ".v2")

    def tagged(event: Event, poison: str, **changes: str) -> list[tuple[str, bytes]]:
        other = Event(**{**event.__dict__, "id": new_event_id()})
        return [*headers_of(other, **changes), ("x-batch", batch.encode()),
                ("x-poison", poison.encode())]  # fmt: skip

    junk = {**good.data, "padding": "x" * (MAX_EVENT_BYTES + 1024)}
    poison: list[tuple[bytes, list[tuple[str, bytes]]]] = [
        (b"\x00\x9f not json {", tagged(good, "not-json")),
        (good.body(), tagged(good, "future-version", ce_type=future)),
        (good.body(), [("x-batch", batch.encode()), ("x-poison", b"no-headers")]),
        (Event(**{**good.__dict__, "data": junk}).body(), tagged(good, "oversize")),
        (
            good.body(),
            [
                (k, b"\xff\xfe" if k == "ce_source" else v)
                for k, v in tagged(good, "header-not-utf8")
            ],
        ),
        (b'{"case_id": 42}', tagged(good, "breaks-schema")),
        (
            good.body(),
            [(k, None if k == "ce_id" else v) for k, v in tagged(good, "header-null")],  # type: ignore[misc]
        ),
    ]
    for value, headers in poison:
        await platform.producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
    await platform.producer.send_and_wait(
        topic, good.body(), key=key.encode(), headers=headers_of(good)
    )
    return key, batch, good


@pytest.mark.parametrize(("topic", "service"), PAIRS)
async def test_poison_is_dead_lettered_and_the_group_keeps_consuming(
    platform: Platform, topic: str, service: str
) -> None:
    consumer = platform.services[service]
    if topic not in platform.batches:
        tail = await TopicReader(dlq(topic)).mark()
        platform.batches[topic] = (*await send_batch(platform, topic), tail)  # type: ignore[assignment]
    key, batch, good, tail = platform.batches[topic]  # type: ignore[misc]

    # The good event behind the poison, on the same partition, was applied: nothing blocked.
    await eventually(lambda: taken_in(consumer, good), timeout=60)

    async def letters() -> dict[str, dict[str, bytes]] | None:
        mine = {}
        for record in await tail.read():
            headers = dict(record.headers)
            if (
                headers.get("x-batch") == batch.encode()
                and headers.get("avis_dlq_group") == consumer.group.encode()
            ):
                mine[headers["x-poison"].decode()] = headers | {"key": record.key}
        return mine if len(mine) >= len(REASONS) else None

    found = await eventually(letters, timeout=60)
    assert set(found) == set(REASONS)
    for poison, reason in REASONS.items():
        headers = found[poison]
        assert headers["avis_dlq_reason"].startswith(reason), (poison, headers["avis_dlq_reason"])
        assert headers["avis_dlq_topic"] == topic.encode()
        assert headers["key"] == key.encode()
        assert int(headers["avis_dlq_offset"]) >= 0


# --- events for a case nobody knows ------------------------------------------------------------

PARKS = [(REVIEW_COMPLETED, "reports"), (REVIEW_ASSIGNED, "notify"), (REPORT_READY, "notify")]
NEVER = [(REVIEW_ASSIGNED, "intake"), (REVIEW_COMPLETED, "intake"), (REPORT_READY, "intake")]


async def letter_for(tail: TopicReader, event: Event, group: str) -> dict[str, bytes]:
    async def found() -> dict[str, bytes] | None:
        for record in await tail.read():
            headers = dict(record.headers)
            if (
                headers.get("ce_id") == event.id.encode()
                and headers.get("avis_dlq_group") == group.encode()
            ):
                return headers
        return None

    letter: dict[str, bytes] = await eventually(found, timeout=60)
    return letter


async def publish_event(platform: Platform, event: Event) -> None:
    await platform.producer.send_and_wait(
        event.topic, event.body(), key=event.subject.encode(), headers=headers_of(event)
    )


@pytest.mark.parametrize(("topic", "service"), NEVER)
async def test_intake_dead_letters_an_event_for_a_case_it_never_filed(
    platform: Platform, topic: str, service: str
) -> None:
    consumer = platform.services[service]
    tail = await TopicReader(dlq(topic)).mark()
    event = good_event(platform, topic, unique("stranger"))
    await publish_event(platform, event)
    letter = await letter_for(tail, event, consumer.group)
    assert letter["avis_dlq_reason"].startswith(b"unknown case: intake never filed it")
    assert not await taken_in(consumer, event)


@pytest.mark.parametrize(("topic", "service"), PARKS)
async def test_an_event_for_an_unknown_case_waits_bounded_then_is_dead_lettered_and_replayed(
    platform: Platform, topic: str, service: str
) -> None:
    consumer = platform.services[service]
    db = consumer.runtime.db
    stranger = unique("stranger")
    tail = await TopicReader(dlq(topic)).mark()
    event = good_event(platform, topic, stranger)
    await publish_event(platform, event)

    # Parked: taken in (the partition moves on), noted in the register by its case.
    await eventually(lambda: taken_in(consumer, event), timeout=60)
    assert await db[PARKED].find_one({"_id": stranger}) is not None

    # The bound passes: the event is a dead letter with the reason; nothing of it stays parked.
    letter = await letter_for(tail, event, consumer.group)
    assert letter["avis_dlq_reason"] == b"unknown case after 4s"
    assert letter["avis_dlq_topic"] == topic.encode()
    assert not await taken_in(consumer, event)
    assert await db[PARKED].find_one({"_id": stranger}) is None
    case = await db["cases"].find_one({"_id": stranger})
    assert case is None or not case.get("parked"), "nothing left parked on the case"

    # Fixed: the case arrives; the replay puts the letter back and it takes effect.
    await publish_event(platform, good_event(platform, CASE_SUBMITTED, stranger))
    await eventually(lambda: knows(consumer, stranger), timeout=60)
    assert await replay(KAFKA, topic, timeout=30) >= 1
    await eventually(lambda: taken_in(consumer, event), timeout=60)

    async def took_effect() -> bool:
        doc = await db["cases"].find_one({"_id": stranger}) or {}
        if service == "reports":
            return bool(doc.get("versions"))
        return len(doc.get("notifications") or []) >= 2  # its submission's email, then this one

    await eventually(took_effect, timeout=60)
    assert await db[PARKED].find_one({"_id": stranger}) is None


# --- the depth of the dead-letter topics -------------------------------------------------------


async def test_dlq_depth_counts_what_the_replay_has_not_taken(topic: str) -> None:
    assert await dlq_depths(KAFKA, [topic]) == {topic: 0}
    producer = AIOKafkaProducer(**KAFKA.options(), acks="all")
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(dlq(topic), f"letter {n}".encode(), key=b"k")
    finally:
        await producer.stop()
    assert await dlq_depths(KAFKA, [topic]) == {topic: 3}, "nothing replayed yet: all"
    assert await replay(KAFKA, topic, limit=2) == 2
    assert await dlq_depths(KAFKA, [topic]) == {topic: 1}
    assert await replay(KAFKA, topic) == 1
    assert await dlq_depths(KAFKA, [topic]) == {topic: 0}


def gauge(service: str, topic: str) -> float | None:
    return REGISTRY.get_sample_value("avis_dlq_depth", {"service": service, "topic": dlq(topic)})


async def test_each_service_exposes_the_depth_of_the_dead_letters_it_reads(
    platform: Platform,
) -> None:
    for topic in READERS:  # one more dead letter on each, from every group reading it
        await platform.producer.send_and_wait(topic, b"not an event", key=b"depth")
    for name, service in platform.services.items():
        for topic in topics_of(name):

            async def current(service: Service = service, topic: str = topic) -> bool:
                value = gauge(service.settings.service_name, topic)
                depth = (await dlq_depths(KAFKA, [topic]))[topic]
                return depth > 0 and value == depth

            await eventually(current, timeout=30)
    # and /metrics shows it, as a Prometheus scrape reads it
    intake = platform.services["intake"]
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{intake.url}/metrics")).text
    line = f'avis_dlq_depth{{service="{intake.settings.service_name}",topic="report-ready.dlq"}}'
    assert line in text
