"""Kafka plumbing: the broker, publishing under the case's trace, the idempotent consumer,
dead letters and their replay (DESIGN.md sections 3 and 4)."""

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.message import StreamMessage
from opentelemetry import context, propagate
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from avis.shared.envelope import Event, PoisonMessage
from avis.shared.mongo import TRANSIENT_STORE_ERRORS, Document
from avis.shared.observability import (
    EVENTS_CONSUMED,
    EVENTS_DEAD_LETTERED,
    EVENTS_FAILED,
    EVENTS_PUBLISHED,
    HANDLER_SECONDS,
)
from avis.shared.retry import Backoff
from avis.shared.settings import CommonSettings
from avis.shared.topics import dlq

log = structlog.get_logger("avis.kafka")
DLQ_PREFIX = "avis_dlq_"
INBOX_PREFIX = "inbox_"


class RetryLater(Exception):
    """The event needs one not seen yet (no order across topics): retried, never poison."""


TRANSIENT: tuple[type[Exception], ...] = (*TRANSIENT_STORE_ERRORS, KafkaError, RetryLater)
Handler = Callable[[Event, Any], Awaitable[None]]


def make_broker(settings: CommonSettings) -> KafkaBroker:
    """A broker whose producer waits for all in-sync replicas and is idempotent."""
    return KafkaBroker(
        settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        client_id=f"avis-{settings.service_name}",
        middlewares=[KafkaTelemetryMiddleware()],
        request_timeout_ms=10000,
        graceful_timeout=10.0,
        logger=None,
    )


async def raw_body(msg: StreamMessage[Any]) -> bytes:
    """Leave decoding to the envelope, so an undecodable body becomes a dead letter."""
    return msg.body


class Messaging:
    """Publishing and consuming for one service, on top of its broker and its own database."""

    def __init__(self, settings: CommonSettings, broker: KafkaBroker, db: AsyncDatabase[Document]):
        self.settings = settings
        self.service = settings.service_name
        self.broker = broker
        self.db = db
        self.group_id = f"avis-{self.service}"

    def inbox(self, event: Event) -> AsyncCollection[Document]:
        """The inbox bucket of `event`: one collection per UTC day of the event's own time.

        The time is fixed when the event enters its outbox, so every redelivery of one event
        meets the same bucket (one look-up by `_id`), and a whole day is dropped at once when
        it is past the broker's retention (`prune_inbox`), at no cost per marker.
        """
        return self.db[f"{INBOX_PREFIX}{event.time.astimezone(UTC):%Y%m%d}"]

    async def processed(self, event: Event) -> bool:
        """Whether this consumer group has stored its effect of `event`."""
        marker = f"{self.group_id}:{event.id}"
        return await self.inbox(event).find_one({"_id": marker}, {"_id": 1}) is not None

    async def prune_inbox(self, now: datetime | None = None) -> list[str]:
        """Drop the inbox buckets older than the retention; returns the names dropped."""
        keep = self.settings.inbox_retention_days
        oldest = f"{INBOX_PREFIX}{(now or datetime.now(UTC)) - timedelta(days=keep):%Y%m%d}"
        dropped = []
        for name in await self.db.list_collection_names():
            if name.startswith(INBOX_PREFIX) and name < oldest:
                await self.db.drop_collection(name)
                dropped.append(name)
        if dropped:
            log.info("inbox pruned", buckets=len(dropped))
        return dropped

    async def send(self, event: Event) -> Awaitable[None]:
        """Hand one event to the producer under its stored trace context.

        Returns the broker's acknowledgement to await: events sent one after another keep
        their order per partition while their acks travel together.
        """
        token = context.attach(propagate.extract(event.headers()))
        try:
            future = await self.broker.publish(
                event.body(),
                topic=event.topic,
                key=event.subject.encode(),
                headers=event.headers(),
                no_confirm=True,
            )
        finally:
            context.detach(token)

        async def acked() -> None:
            await future
            EVENTS_PUBLISHED.labels(self.service, event.topic, event.type).inc()

        return acked()

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Consume `topic` in this service's group: the effect first, the offset after."""

        # MANUAL: FastStream's default commits before processing; we commit after the effect.
        @self.broker.subscriber(
            topic,
            group_id=self.group_id,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            decoder=raw_body,
            max_workers=self.settings.consumer_workers,
        )
        async def consume(msg: KafkaMessage) -> None:
            await self.process(msg.raw_message, handler)
            await msg.ack()

    async def process(self, record: ConsumerRecord[bytes, bytes], handler: Handler) -> str:
        """Apply one record's effect exactly once; returns the outcome."""
        topic = record.topic
        headers = dict(record.headers or ())
        try:
            event = Event.from_kafka(topic, headers, record.value or b"")
        except PoisonMessage as exc:
            await self.dead_letter(record, str(exc), attempts=1)
            return "dead-lettered"
        marker = f"{self.group_id}:{event.id}"
        structlog.contextvars.bind_contextvars(event_id=event.id, case_id=event.subject)
        try:
            return await self._apply(record, event, marker, handler)
        finally:
            structlog.contextvars.unbind_contextvars("event_id", "case_id")

    async def _apply(
        self, record: ConsumerRecord[bytes, bytes], event: Event, marker: str, handler: Handler
    ) -> str:
        cap = self.settings.retry_backoff_max_seconds
        errors, transient = Backoff(cap), Backoff(cap)
        while True:
            try:
                inbox = self.inbox(event)
                if await inbox.find_one({"_id": marker}, {"_id": 1}):
                    EVENTS_CONSUMED.labels(self.service, event.topic, event.type, "duplicate").inc()
                    return "duplicate"
                with HANDLER_SECONDS.labels(self.service, event.topic).time():
                    await handler(event, event.payload())
                with contextlib.suppress(DuplicateKeyError):
                    await inbox.insert_one(
                        {
                            "_id": marker,
                            "topic": event.topic,
                            "type": event.type,
                            "at": datetime.now(UTC),
                        }
                    )
                EVENTS_CONSUMED.labels(self.service, event.topic, event.type, "applied").inc()
                return "applied"
            except PoisonMessage as exc:
                await self.dead_letter(record, str(exc), attempts=errors.attempt + 1)
                return "dead-lettered"
            except TRANSIENT as exc:
                # Never dead-lettered: the store or broker will come back, or the event we
                # depend on will arrive. The partition waits; ordering per case holds.
                EVENTS_FAILED.labels(self.service, event.topic, "transient").inc()
                delay = transient.next_delay()
                if transient.attempt == 1:  # once per event: an outage is reported by the runtime
                    log.warning("event retried", error=type(exc).__name__)
                await asyncio.sleep(delay)
            except Exception as exc:
                EVENTS_FAILED.labels(self.service, event.topic, "error").inc()
                reason = f"{type(exc).__name__}: {str(exc)[:200]}"
                if errors.attempt + 1 >= self.settings.consumer_max_attempts:
                    attempts = errors.attempt + 1
                    log.error("event dead-lettered", error=type(exc).__name__, attempts=attempts)
                    await self.dead_letter(record, reason, attempts=attempts)
                    return "dead-lettered"
                log.warning("event failed", error=type(exc).__name__, attempt=errors.attempt + 1)
                await errors.wait()

    async def dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str, attempts: int
    ) -> None:
        """Send the original record, headers and reason to `<topic>.dlq`; retried until acked."""
        headers = {
            k: v.decode(errors="replace")
            for k, v in (record.headers or ())
            if not k.startswith(DLQ_PREFIX)
        }
        headers |= {
            f"{DLQ_PREFIX}reason": reason,
            f"{DLQ_PREFIX}attempts": str(attempts),
            f"{DLQ_PREFIX}topic": record.topic,
            f"{DLQ_PREFIX}partition": str(record.partition),
            f"{DLQ_PREFIX}offset": str(record.offset),
            f"{DLQ_PREFIX}group": self.group_id,
            f"{DLQ_PREFIX}time": datetime.now(UTC).isoformat(),
        }
        retry = Backoff(self.settings.retry_backoff_max_seconds)
        while True:
            try:
                await self.broker.publish(
                    record.value or b"", topic=dlq(record.topic), key=record.key, headers=headers
                )
                break
            except KafkaError as exc:
                if retry.attempt == 0:
                    log.warning("dead letter not yet written", error=type(exc).__name__)
                await retry.wait()
        EVENTS_DEAD_LETTERED.labels(self.service, record.topic).inc()
        log.error("event dead-lettered", topic=record.topic, reason=reason, attempts=attempts)


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    """The partition numbers of `topic`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in description["partitions"])
    finally:
        await admin.close()


async def replay(
    bootstrap: str, topic: str, limit: int | None = None, timeout: float = 10.0
) -> int:
    """Put the dead letters of `topic` back on it, with their original headers; returns the count.

    Stops by itself once it has caught up with the end of `<topic>.dlq` (or after `limit`).
    """
    source = dlq(topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id="avis-dlq-replay",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    replayed = 0
    try:
        partitions = [TopicPartition(source, p) for p in await partitions_of(bootstrap, source)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (limit is None or replayed < limit):
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if all(positions[tp] >= ends[tp] for tp in partitions):
                break
            batch = await consumer.getmany(timeout_ms=1000, max_records=100)
            for tp, records in batch.items():
                for record in records:
                    if limit is not None and replayed >= limit:
                        break
                    headers = [
                        (k, v) for k, v in (record.headers or ()) if not k.startswith(DLQ_PREFIX)
                    ]
                    await producer.send_and_wait(
                        topic, record.value, key=record.key, headers=headers
                    )
                    await consumer.commit({tp: record.offset + 1})
                    replayed += 1
    finally:
        await consumer.stop()
        await producer.stop()
    return replayed


def replay_main() -> None:
    """`avis-dlq-replay TOPIC`: put the dead letters of TOPIC back on it."""
    parser = argparse.ArgumentParser(description=replay_main.__doc__)
    parser.add_argument("topic", help="the main topic, e.g. case-submitted (not the .dlq)")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    settings = CommonSettings()
    topic = args.topic.removesuffix(".dlq")
    count = asyncio.run(replay(settings.kafka_bootstrap, topic, args.limit))
    print(f"replayed {count} dead letter(s) from {dlq(topic)} to {topic}")
