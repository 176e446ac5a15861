"""Delivery guarantees on the real broker and store: outbox, relay, idempotent consumer, DLQ."""

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from avis.shared.envelope import Event, new_event_id
from avis.shared.events import (
    CaseSubmitted,
    Language,
    Question,
    ReviewAccepted,
    ReviewAssigned,
    Specialty,
    Urgency,
)
from avis.shared.kafka import Marks, replay
from avis.shared.outbox import HINTS, Relay, new_with_events, with_events
from avis.shared.runtime import Runtime
from avis.shared.sealing import Keyring, SealingError, generate_key
from avis.shared.settings import CommonSettings
from avis.shared.topics import REVIEW_ASSIGNED, inbox_days
from tests.support.basics import (
    KAFKA,
    MONGO_URL,
    eventually,
    make_settings,
    publish,
    skip_history,
    unique,
)
from tests.support.consumer import Consumer, started, withdrawn
from tests.support.topics import read_topic

pytestmark = pytest.mark.infra


async def test_relay_killed_between_publish_and_mark_gives_one_effect(
    settings: CommonSettings, topic: str
) -> None:
    producer = await started(settings)
    try:
        aggregates = producer.db["aggregates"]
        event = withdrawn(topic)

        async def send_then_die(ev: Event) -> Awaitable[None]:
            await publish(producer, ev)
            raise asyncio.CancelledError  # the process dies after the ack, before the mark

        dying = Relay("test", send_then_die, producer.locks)
        dying.watch(aggregates)
        async with dying.publishing(aggregates, event.subject):
            await aggregates.insert_one(
                new_with_events({"_id": event.subject, "status": "x"}, [event])
            )
        with pytest.raises(asyncio.CancelledError):
            await dying.drain()
        doc = await aggregates.find_one({"_id": event.subject})
        assert doc is not None and doc["outbox_pending"] == 1, "the event must still be pending"

        # A new process knows nothing in memory: the hint left before the write finds it.
        restarted = Relay("test", producer.messaging.send, producer.locks)
        restarted.watch(aggregates)
        async with Consumer(topic) as consumer:
            assert await restarted.drain() == 1
            assert await producer.db[HINTS].count_documents({}) == 0, "the hint goes once out"
            doc = await aggregates.find_one({"_id": event.subject})
            assert doc is not None and doc["outbox_pending"] == 0 and doc["outbox"] == []
            records = await read_topic(topic, expect=2)
            ids = [dict(r.headers)["ce_id"].decode() for r in records]
            assert ids == [event.id, event.id], "published twice, with the same ce_id"
            await eventually(lambda: consumer.outcomes(topic, event.type, "duplicate") == 1)
            assert await consumer.count(event.id) == 1
            assert await restarted.drain() == 0
    finally:
        await producer.stop()


class Commands(monitoring.CommandListener):
    """Every command a client sends, to see what the relay asks the store."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.seen.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@contextlib.asynccontextmanager
async def watched_store(
    settings: CommonSettings,
) -> AsyncIterator[tuple[AsyncDatabase[dict[str, Any]], Commands, Runtime]]:
    """The test's database through a client whose every command is seen, and a started
    producer beside it."""
    commands = Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        MONGO_URL, event_listeners=[commands], tz_aware=True
    )
    producer = await started(settings)
    try:
        yield client[settings.database], commands, producer
    finally:
        await client.close()
        await producer.stop()


async def test_relay_reads_aggregates_only_by_id_whatever_is_stored(
    settings: CommonSettings, topic: str
) -> None:
    async with watched_store(settings) as (db, commands, producer):
        aggregates = db["aggregates"]
        # Many aggregates whose events went out long ago: the relay must not read them.
        await aggregates.insert_many(
            [{"_id": f"old-{i:04d}", "outbox": [], "outbox_pending": 0} for i in range(300)]
        )
        relay = Relay("test", producer.messaging.send, producer.locks)
        relay.watch(aggregates)
        assert await relay.drain() == 0
        event = withdrawn(topic)
        async with relay.publishing(aggregates, event.subject):
            await aggregates.insert_one(new_with_events({"_id": event.subject}, [event]))
        commands.seen.clear()
        assert await relay.drain() == 1
        finds = [c["filter"] for c in commands.seen if c.get("find") == "aggregates"]
        assert finds == [{"_id": event.subject}], finds
        updates = [
            u["q"] for c in commands.seen if c.get("update") == "aggregates" for u in c["updates"]
        ]
        assert updates == [{"_id": event.subject}]


async def test_state_change_and_events_are_one_write(settings: CommonSettings, topic: str) -> None:
    producer = await started(settings)
    try:
        aggregates = producer.db["aggregates"]
        first = withdrawn(topic)
        await aggregates.insert_one(new_with_events({"_id": first.subject, "status": "a"}, []))
        second = withdrawn(topic, first.subject)
        relay = Relay("test", producer.messaging.send, producer.locks)
        relay.watch(aggregates)
        async with relay.publishing(aggregates, first.subject):
            await aggregates.update_one(
                {"_id": first.subject}, with_events({"$set": {"status": "b"}}, [first, second])
            )
        doc = await aggregates.find_one({"_id": first.subject})
        assert doc is not None and doc["status"] == "b"
        assert [e["id"] for e in doc["outbox"]] == [first.id, second.id]
        assert await relay.drain() == 2
        records = await read_topic(topic, expect=2)
        assert [dict(r.headers)["ce_id"].decode() for r in records] == [first.id, second.id]
        assert {r.key for r in records} == {first.subject.encode()}
        assert relay.measure() == (0, 0.0)
    finally:
        await producer.stop()


async def test_redelivered_event_changes_nothing(settings: CommonSettings, topic: str) -> None:
    producer = await started(settings)
    try:
        event = withdrawn(topic)
        async with Consumer(topic) as consumer:
            for _ in range(3):
                await publish(producer, event)
            await eventually(lambda: consumer.outcomes(topic, event.type, "duplicate") == 2)
            assert await consumer.count(event.id) == 1
            assert consumer.outcomes(topic, event.type, "applied") == 1
            assert consumer.outcomes(topic, event.type, "duplicate") == 2
    finally:
        await producer.stop()


async def test_inbox_is_kept_per_day_and_old_days_are_dropped_whole(
    settings: CommonSettings, topic: str
) -> None:
    producer = await started(settings)
    try:
        today = withdrawn(topic)
        past = timedelta(days=inbox_days(settings) + 6)  # past the markers' retention
        old = dataclasses.replace(withdrawn(topic), time=today.time - past)
        async with Consumer(topic) as consumer:
            for event in (today, old):
                await publish(producer, event)
            await eventually(lambda: consumer.outcomes(topic, today.type, "applied") == 2)
            messaging = consumer.runtime.messaging
            assert await messaging.processed(today) and await messaging.processed(old)
            dropped = await messaging.prune_inbox()
            assert dropped == [messaging.inbox(old).name], "only the day past retention goes"
            assert await messaging.processed(today), "a recent marker is kept"
            assert not await messaging.processed(old)
            await publish(producer, today)  # a redelivery within retention
            await eventually(lambda: consumer.outcomes(topic, today.type, "duplicate") == 1)
            assert await consumer.count(today.id) == 1
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def redelivered(**options: bool) -> AsyncIterator[tuple[Runtime, Event]]:
    """A runtime whose `review-assigned` handler is registered with `options`, once an
    assignment was delivered and then redelivered, and the handler ran for both."""
    runtime = Runtime(make_settings())
    handled: list[str] = []

    async def on_assigned(event: Event, p: ReviewAssigned) -> None:
        handled.append(event.id)

    runtime.on(ReviewAssigned, on_assigned, **options)
    await skip_history(runtime.messaging.group_id, [REVIEW_ASSIGNED])
    await runtime.start()
    try:
        await eventually(lambda: runtime.kafka_started)
        now = datetime.now(UTC)
        assigned = Event.new(
            ReviewAssigned(
                case_id=unique("case"),
                assignment_id=unique("a"),
                reviewer_id="r1",
                specialty="cardiology",
                assigned_at=now,
                due_at=now,
            ),
            "/avis/test",
        )
        for _ in range(2):  # delivered, then redelivered
            await publish(runtime, assigned)
        await eventually(lambda: handled == [assigned.id, assigned.id])
        yield runtime, assigned
    finally:
        await runtime.stop()


def consumed(runtime: Runtime, event: Event, outcome: str) -> float | None:
    """How many of `event`'s type this runtime counted with `outcome`."""
    labels = {"service": runtime.service, "topic": REVIEW_ASSIGNED, "type": event.type}
    return REGISTRY.get_sample_value("avis_events_consumed_total", labels | {"outcome": outcome})


async def test_a_recorded_type_is_marked_but_never_looked_up() -> None:
    """A handler whose own write records the event (`recorded`, intake's timeline) is not
    preceded by an inbox look-up: a redelivery reaches it (its own rule turns it away), and
    the marker is still written after it."""
    async with redelivered(recorded=True) as (runtime, assigned):
        # Marked all the same, with the others held within a second (`Marks`).
        await eventually(lambda: runtime.messaging.processed(assigned))
        assert not consumed(runtime, assigned, "duplicate"), "never turned away by the inbox"


async def test_a_type_recorded_and_not_marked_passes_no_inbox() -> None:
    """A handler whose own write records the event and whose marker nothing reads
    (`recorded=True, marked=False`, notify's case events): neither looked up nor marked, so a
    redelivery reaches it and the inbox holds nothing of it."""
    async with redelivered(recorded=True, marked=False) as (runtime, assigned):
        assert not await runtime.messaging.processed(assigned), "no marker"
        assert consumed(runtime, assigned, "applied") == 2


async def test_a_type_the_service_has_no_handler_for_leaves_no_inbox_marker() -> None:
    """A topic carries types a service does nothing with (review's acceptances, for notify):
    acknowledged without a look-up or a marker in the inbox; the handled ones as before."""
    runtime = Runtime(make_settings())
    handled: list[str] = []

    async def on_assigned(event: Event, p: ReviewAssigned) -> None:
        handled.append(event.id)

    runtime.on(ReviewAssigned, on_assigned)
    await skip_history(runtime.messaging.group_id, [REVIEW_ASSIGNED])
    await runtime.start()
    try:
        await eventually(lambda: runtime.kafka_started)
        case_id, now = unique("case"), datetime.now(UTC)
        round_ = {"case_id": case_id, "assignment_id": unique("a"), "reviewer_id": "r1"}
        accepted = Event.new(ReviewAccepted(**round_, accepted_at=now), "/avis/test")
        assigned = Event.new(
            ReviewAssigned(**round_, specialty="cardiology", assigned_at=now, due_at=now),
            "/avis/test",
        )
        for event in (accepted, assigned):  # one case: one partition, in this order
            await publish(runtime, event)
        await eventually(lambda: assigned.id in handled)
        assert await runtime.messaging.processed(assigned)
        assert not await runtime.messaging.processed(accepted), "no marker for a type not handled"
        labels = {"service": runtime.service, "topic": REVIEW_ASSIGNED, "type": accepted.type}
        skipped = REGISTRY.get_sample_value(
            "avis_events_consumed_total", labels | {"outcome": "skipped"}
        )
        assert skipped is not None and skipped >= 1
    finally:
        await runtime.stop()


async def test_poison_goes_to_dlq_with_reason_and_is_replayed(
    settings: CommonSettings, topic: str
) -> None:
    producer = await started(settings)
    raw = AIOKafkaProducer(**KAFKA.options())
    await raw.start()
    try:
        async with Consumer(topic) as consumer:
            # 1. undecodable: dead-lettered at once, with the reason and the original headers
            garbage = withdrawn(topic)
            headers = [(k, v.encode()) for k, v in garbage.headers().items()]
            await raw.send_and_wait(topic, b"{not json", key=b"k", headers=headers)
            # 2. a handler that keeps failing: dead-lettered after the bounded attempts
            consumer.broken = True
            failing = withdrawn(topic)
            await publish(producer, failing)
            letters = await read_topic(f"{topic}.dlq", expect=2)
            by_id = {dict(r.headers)["ce_id"].decode(): dict(r.headers) for r in letters}
            assert set(by_id) == {garbage.id, failing.id}
            assert b"undecodable" in by_id[garbage.id]["avis_dlq_reason"]
            assert by_id[garbage.id]["avis_dlq_attempts"] == b"1"
            assert by_id[failing.id]["avis_dlq_reason"].startswith(b"RuntimeError")
            assert by_id[failing.id]["avis_dlq_attempts"] == b"3"
            assert by_id[failing.id]["ce_type"] == b"avis.case.withdrawn.v1"
            assert by_id[failing.id]["avis_dlq_topic"] == topic.encode()
            assert await consumer.count(failing.id) == 0
            labels = {"service": consumer.runtime.service, "topic": topic}
            assert REGISTRY.get_sample_value("avis_events_dead_lettered_total", labels) == 2
            assert (
                REGISTRY.get_sample_value("avis_events_failed_total", {**labels, "kind": "error"})
                == 3
            )

            # the handler is fixed: replay puts both back; the good one is applied once,
            # the undecodable one goes back to the DLQ.
            consumer.broken = False
            assert await replay(KAFKA, topic) == 2
            await eventually(lambda: consumer.count(failing.id))
            again = await read_topic(f"{topic}.dlq", expect=3)
            assert len(again) == 3
            assert await replay(KAFKA, topic) == 1, "only the new dead letter is replayed"
            assert await consumer.count(failing.id) == 1
    finally:
        await raw.stop()
        await producer.stop()


async def test_sealed_field_crosses_kafka_opens_after_rotation_and_refuses_tampering(
    topic: str,
) -> None:
    old_ring = f"k1:{generate_key()}"
    producer = await started(make_settings(sealing_keys=old_ring))
    opened: dict[str, dict[str, Any]] = {}
    consumer = Runtime(make_settings(sealing_keys=f"k2:{generate_key()},{old_ring}"))
    ring = Keyring.from_settings(consumer.settings)

    async def handle(event: Event, payload: Any) -> None:
        opened[event.id] = ring.open_json(payload.contact, aad=event.id)

    consumer.subscribe(topic, handle)
    await consumer.start()
    try:
        event_id = new_event_id()
        contact = {"given_name": "Éloïse", "family_name": "Dupré", "email": "eloise@example.org"}
        sealed = Keyring.from_settings(producer.settings).seal_json(contact, aad=event_id)
        payload = CaseSubmitted(
            case_id=unique("case"),
            reference="AV-2026-000001",
            specialty=Specialty.CARDIOLOGY,
            urgency=Urgency.ROUTINE,
            language=Language.FR,
            questions=[Question.RISK_BENEFIT],
            document_count=1,
            submitted_at=datetime.now(UTC),
            case_url="http://127.0.0.1:8001/v1/cases/x",
            contact=sealed,
        )
        event = dataclasses.replace(
            Event.new(payload, "/avis/test", event_id=event_id), topic=topic
        )
        await publish(producer, event)
        await eventually(lambda: opened.get(event_id))
        assert opened[event_id] == contact, "sealed under k1, opened by a ring that rotated to k2"

        (record,) = await read_topic(topic, expect=1)
        raw = (record.value or b"") + b"".join(v for _, v in record.headers)
        for clear in (b"eloise", "Éloïse".encode(), b"\\u00c9lo", b"Dupr"):
            assert clear not in raw
        # the same sealed value does not open for another event, nor once tampered with
        with pytest.raises(SealingError):
            ring.open_json(payload.contact, aad=new_event_id())
        ct = payload.contact.ct
        tampered = payload.contact.model_copy(
            update={"ct": ("B" if ct[0] == "A" else "A") + ct[1:]}
        )
        with pytest.raises(SealingError):
            ring.open_json(tampered, aad=event_id)
        with pytest.raises(SealingError, match="k1"):
            Keyring.parse(f"k3:{generate_key()}").open_json(payload.contact, aad=event_id)
    finally:
        await consumer.stop()
        await producer.stop()


async def test_a_copy_publishes_another_copys_outbox_only_once_that_copy_is_gone(
    settings: CommonSettings, topic: str
) -> None:
    producer = await started(settings)
    try:
        # The runtime's own presence: it lives; a copy that never claimed one is not known.
        await eventually(producer.presence.holding)
        assert await producer.alive(producer.holder) is True
        assert await producer.alive("intake@elsewhere:1:0") is None

        aggregates = producer.db["aggregates"]
        event = withdrawn(topic)
        writer = Relay("test", producer.messaging.send, producer.locks, writer="copy-a")
        writer.watch(aggregates)
        async with writer.publishing(aggregates, event.subject):
            await aggregates.insert_one(new_with_events({"_id": event.subject}, [event]))
        verdicts: dict[str, bool | None] = {"copy-a": True}
        adopting = True

        async def alive(copy: str) -> bool | None:
            return verdicts.get(copy)

        def another_copy() -> Relay:
            """A copy just started: its first drain looks at every hint."""
            relay = Relay(
                "test",
                producer.messaging.send,
                producer.locks,
                writer="copy-b",
                alive=alive,
                adopts=lambda: adopting,
            )
            relay.watch(aggregates)
            return relay

        assert await another_copy().drain() == 0, "its writer lives: its own relay publishes it"
        verdicts["copy-a"] = None
        assert await another_copy().drain() == 0, "a writer not known yet, a fresh hint: left"
        verdicts["copy-a"] = False
        adopting = False
        assert await another_copy().drain() == 0, "gone, but this copy does not adopt"
        adopting = True
        assert await another_copy().drain() == 1, "gone: the adopting copy publishes it"
        doc = await aggregates.find_one({"_id": event.subject})
        assert doc is not None and doc["outbox_pending"] == 0 and doc["outbox"] == []
        assert await producer.db[HINTS].count_documents({}) == 0
        await producer.presence.release()
        assert await producer.alive(producer.holder) is False, "released: gone"
    finally:
        await producer.stop()


async def test_a_copys_events_written_while_another_copy_publishes_stay_hinted(
    settings: CommonSettings, topic: str
) -> None:
    """Copy A's relay reads an aggregate's outbox and waits for the broker; meanwhile copy B
    (another process: A's lock does not hold it) writes two events on the same aggregate, then
    dies before publishing them. A's relay, done, must leave B's hint: the copy that adopts
    B's hints publishes them."""
    producer = await started(settings)
    try:
        aggregates = producer.db["aggregates"]
        first = withdrawn(topic)
        later = withdrawn(topic, first.subject)
        read, broker_back = asyncio.Event(), asyncio.Event()

        async def slow_send(ev: Event) -> Awaitable[None]:
            ack = await producer.messaging.send(ev)
            read.set()  # the outbox was read, what it held is on its way

            async def acked() -> None:
                await broker_back.wait()
                await ack

            return acked()

        a = Relay("test", slow_send, producer.locks, writer="copy-a")
        b = Relay("test", producer.messaging.send, producer.locks, writer="copy-b")
        for relay in (a, b):
            relay.watch(aggregates)
        async with a.publishing(aggregates, first.subject):
            await aggregates.insert_one(new_with_events({"_id": first.subject}, [first]))
        publishing = asyncio.create_task(a.drain())
        await read.wait()
        async with b.publishing(aggregates, first.subject):  # then B is killed: never drained
            await aggregates.update_one(
                {"_id": first.subject}, with_events({"$set": {"status": "y"}}, [later])
            )
        broker_back.set()
        assert await publishing == 1, "A published what it read"
        left = await producer.db[HINTS].find({}).to_list()
        assert [h["writer"] for h in left] == ["copy-b"], left

        async def gone(copy: str) -> bool | None:
            return False  # B's presence expired

        adopting = Relay("test", producer.messaging.send, producer.locks, writer="copy-c")
        adopting.alive = gone
        adopting.watch(aggregates)
        assert await adopting.drain() == 1, "B's event, published by the adopting copy"
        doc = await aggregates.find_one({"_id": first.subject})
        assert doc is not None and doc["outbox"] == [] and doc["outbox_pending"] == 0
        assert await producer.db[HINTS].count_documents({}) == 0
        records = await read_topic(topic, expect=2)
        assert {dict(r.headers)["ce_id"].decode() for r in records} == {first.id, later.id}
    finally:
        await producer.stop()


async def test_a_drains_own_hints_go_in_one_request_and_a_hint_stored_again_stays(
    settings: CommonSettings, topic: str
) -> None:
    """Five aggregates written, one drain: their five hints go in one delete. A write to one of
    them between the drain's publishing and that delete (its lock is free by then) stores its
    hint again: the delete leaves it, and the next drain publishes the new event."""
    async with watched_store(settings) as (db, commands, producer):
        aggregates = db["aggregates"]
        hints = db[HINTS]
        relay = Relay(
            "test", producer.messaging.send, producer.locks, writer="copy-a", forget_seconds=0
        )
        relay.watch(aggregates)
        events = [withdrawn(topic) for _ in range(5)]
        for event in events:
            async with relay.publishing(aggregates, event.subject):
                await aggregates.insert_one(new_with_events({"_id": event.subject}, [event]))
        later = withdrawn(topic, events[0].subject)
        forget = relay._forget_spent

        async def written_meanwhile() -> None:
            async with relay.publishing(aggregates, later.subject):
                await aggregates.update_one(
                    {"_id": later.subject}, with_events({"$set": {"status": "y"}}, [later])
                )
            await forget()

        relay._forget_spent = written_meanwhile  # type: ignore[method-assign]
        commands.seen.clear()
        assert await relay.drain() == 5
        deletes = [c for c in commands.seen if c.get("delete") == HINTS]
        assert len(deletes) == 1, deletes
        left = await hints.find({}).to_list()
        assert [h["aggregate"] for h in left] == [later.subject], left

        relay._forget_spent = forget  # type: ignore[method-assign]
        assert await relay.drain() == 1, "the event written meanwhile, still hinted, goes out"
        assert await hints.count_documents({}) == 0
        records = await read_topic(topic, expect=6)
        assert {dict(r.headers)["ce_id"].decode() for r in records} == {
            *(e.id for e in events),
            later.id,
        }


async def test_the_hints_of_drains_within_forget_seconds_go_together(
    settings: CommonSettings, topic: str
) -> None:
    """Drains closer together than `forget_seconds` leave their hints to one later delete."""
    async with watched_store(settings) as (db, commands, producer):
        aggregates = db["aggregates"]
        relay = Relay("test", producer.messaging.send, producer.locks, forget_seconds=3600)
        relay.watch(aggregates)
        for _ in range(3):
            event = withdrawn(topic)
            async with relay.publishing(aggregates, event.subject):
                await aggregates.insert_one(new_with_events({"_id": event.subject}, [event]))
            assert await relay.drain() == 1
        deletes = [c for c in commands.seen if c.get("delete") == HINTS]
        assert len(deletes) == 1, "the first drain's hint only"
        assert await db[HINTS].count_documents({}) == 2
        await relay._forget_spent()
        assert len([c for c in commands.seen if c.get("delete") == HINTS]) == 2
        assert await db[HINTS].count_documents({}) == 0


async def test_the_store_requests_are_counted_by_kind(settings: CommonSettings, topic: str) -> None:
    producer = await started(settings)

    def count(kind: str, op: str) -> float:
        labels = {"service": settings.service_name, "kind": kind, "op": op}
        return REGISTRY.get_sample_value("avis_store_requests_total", labels) or 0.0

    try:
        aggregates = producer.db["aggregates"]
        producer.relay.watch(aggregates)
        before = {k: count(k, "write") for k in ("data", "hint", "outbox")}
        event = withdrawn(topic)
        async with producer.relay.publishing(aggregates, event.subject):
            await aggregates.insert_one(new_with_events({"_id": event.subject}, [event]))
        await eventually(lambda: count("outbox", "write") > before["outbox"])
        # The write, the hint before it and its removal after, the mark the relay leaves:
        # each in its own kind (the mark is an update of the aggregate, told apart by its
        # comment, which the store accepts).
        assert count("data", "write") - before["data"] == 1
        assert count("outbox", "write") - before["outbox"] == 1
        await eventually(lambda: count("hint", "write") - before["hint"] == 2)
        doc = await aggregates.find_one({"_id": event.subject})
        assert doc is not None and doc["outbox"] == []
    finally:
        await producer.stop()


async def test_recorded_types_markers_go_together_and_a_stop_writes_those_held(
    settings: CommonSettings,
) -> None:
    """The markers of recorded types (`InboxUse.MARK`) are held and written in one request
    per bucket, a marker already there does not keep the others out, and a clean stop writes
    what is still held."""
    async with watched_store(settings) as (db, commands, _producer):
        bucket = unique("inbox_")
        await db[bucket].insert_one({"_id": "g:e0"})  # a redelivery's marker, already there
        marks = Marks(db, every=0.3)
        for i in range(5):
            marks.add(bucket, {"_id": f"g:e{i}", "type": "t"})
        assert await db[bucket].count_documents({}) == 1, "held, not written one by one"
        await eventually(lambda: _counted(db[bucket], 5), timeout=5)
        inserts = [c for c in commands.seen if c.get("insert") == bucket]
        assert [len(c["documents"]) for c in inserts] == [1, 5]

        held = Marks(db, every=3600)
        held.add(bucket, {"_id": "g:e9", "type": "t"})
        await held.close()
        assert await db[bucket].find_one({"_id": "g:e9"}) is not None


async def _counted(collection: Any, n: int) -> bool:
    return await collection.count_documents({}) == n
