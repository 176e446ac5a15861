"""Kafka plumbing: the broker, publishing under the case's trace, the idempotent consumer,
dead letters and their replay (DESIGN.md sections 3 and 4)."""

import argparse
import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.message import StreamMessage
from opentelemetry import context, propagate
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from avis.shared.case_keys import CaseKeyDestroyed
from avis.shared.envelope import Event, PoisonMessage
from avis.shared.kafka_access import KafkaAccess
from avis.shared.keys import KeyServiceError
from avis.shared.mongo import TRANSIENT_STORE_ERRORS, Document, store_busy
from avis.shared.observability import (
    DLQ_DEPTH,
    EVENTS_CONSUMED,
    EVENTS_DEAD_LETTERED,
    EVENTS_FAILED,
    EVENTS_PUBLISHED,
    HANDLER_SECONDS,
)
from avis.shared.retry import Backoff
from avis.shared.settings import CommonSettings
from avis.shared.tasks import stopped
from avis.shared.topics import dlq, inbox_days

log = structlog.get_logger("avis.kafka")
DLQ_PREFIX = "avis_dlq_"
INBOX_PREFIX = "inbox_"
REPLAY_GROUP = "avis-dlq-replay"  # the group `avis-dlq-replay` commits in: what is replayed


class RetryLater(Exception):
    """The event needs one not seen yet (no order across topics): retried, never poison."""


# What comes back by itself: the store, the broker, the key service, or an awaited event.
TRANSIENT: tuple[type[Exception], ...] = (
    *TRANSIENT_STORE_ERRORS,
    KafkaError,
    KeyServiceError,
    RetryLater,
)
Handler = Callable[[Event, Any], Awaitable[None]]


# One copy of a service owns every event of a case, whatever its topic. Every topic has the
# same partitions and an event's key is its case, so a case is partition p of each topic; the
# range assignor gives partition p of every topic to the same member when the members sort the
# same way in each topic. A member's id starts with its client id, one per copy (a process),
# shared by the copy's consumers of every topic. Without this, two copies could update one case
# at once (its completion at one, its report at the other), and the store's read-modify-write
# updates would lose one of the two.
# Exactly one assignor: aiokafka 0.14 sends one JoinGroup per listed assignor, each with other
# metadata than the last, and in a group of several members every such second join starts the
# rebalance again; with two listed, a group could go on rebalancing for minutes and a start,
# which waits for its first assignment, with it (docs/replicas.md).
ASSIGNORS = (RangePartitionAssignor,)


def make_broker(settings: CommonSettings, *, publishes: bool = True) -> KafkaBroker:
    """A broker whose producer waits for all in-sync replicas and is idempotent, with a client
    id of its own copy (see `ASSIGNORS`), connected as the service's own Kafka user. One that
    only reads (`publishes=False`) asks for no idempotent producer, which a Kafka user without
    the right to write any topic is refused."""
    access = KafkaAccess.of(settings)
    return KafkaBroker(
        access.bootstrap,
        security=access.security(),
        acks="all",
        enable_idempotence=publishes,
        client_id=f"avis-{settings.service_name}-{uuid.uuid4().hex[:12]}",
        middlewares=[KafkaTelemetryMiddleware()],
        request_timeout_ms=10000,
        graceful_timeout=settings.shutdown_grace_seconds,
        logger=None,
        # Handlers take the message (`undecoded`) and nothing else: with injection, each record
        # cost a task group and a worker thread's look-up of the message in the context, about
        # 4% of every service's CPU in the journey bench.
        apply_types=False,
    )


async def undecoded(msg: StreamMessage[Any]) -> StreamMessage[Any]:
    """The message itself, the handler's one argument (the broker has no dependency injection,
    `make_broker`). Decoding is left to the envelope, so an undecodable body becomes a dead
    letter."""
    return msg


async def tolerant_parse(
    record: ConsumerRecord[bytes, bytes],
    original: Callable[[ConsumerRecord[bytes, bytes]], Awaitable[StreamMessage[Any]]],
) -> StreamMessage[Any]:
    """FastStream's parsing, even of a record whose headers are not UTF-8: its parser would fail
    before any handler runs and the record would be passed over unseen. The envelope reads the
    raw headers and makes such a record a dead letter."""
    try:
        return await original(record)
    except (UnicodeDecodeError, AttributeError):  # not UTF-8, or a header without a value
        readable = [
            (k, (v or b"").decode(errors="replace").encode()) for k, v in record.headers or ()
        ]
        message = await original(dataclasses.replace(record, headers=readable))
        message.raw_message = record
        return message


class InboxUse(StrEnum):
    """What the inbox does for one type of event a service consumes."""

    FULL = "full"  # looked up before the handler (a redelivery stops there), marked after it
    MARK = "mark"  # marked after the handler only, with others (`Marks`): the handler's own
    # write records the event and its own rule turns a redelivery away (intake's timeline),
    # so a look-up saves nothing and the marker is for whoever reads it
    # Neither looked up nor marked: the handler's own write records the event, its own rule
    # turns a redelivery away, and nothing reads the marker (notify's case events: the case
    # keeps the ids of the events applied to it)
    OWN = "own"
    NONE = "none"  # no handler: acknowledged, no look-up, no marker


class Marks:
    """The inbox markers of recorded types (`InboxUse.MARK`), written together: one request
    per bucket an `every` seconds at most, rather than one per event.

    Nothing decides by them (the handler's own rule turns a redelivery away), so a marker that
    comes a second late, or is lost with a store error or a crash, loses no effect and repeats
    none. A clean stop writes what is held (`close`).
    """

    def __init__(self, db: AsyncDatabase[Document], every: float = 1.0) -> None:
        self.db = db
        self.every = every
        self._held: dict[str, list[Document]] = {}
        self._due: asyncio.Task[None] | None = None

    def add(self, bucket: str, marker: Document) -> None:
        """Hold one marker for its bucket; the write follows within `every` seconds."""
        self._held.setdefault(bucket, []).append(marker)
        if self._due is None or self._due.done():
            self._due = asyncio.create_task(self._after(), name="inbox-marks")

    async def _after(self) -> None:
        await asyncio.sleep(self.every)
        await self.flush()

    async def flush(self) -> None:
        """Write every marker held, one request per bucket (one already there is kept)."""
        while self._held:
            bucket, markers = self._held.popitem()
            try:
                await self.db[bucket].insert_many(markers, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if not errors or any(e.get("code") != 11000 for e in errors):
                    log.warning("inbox markers not written", markers=len(markers))
            except asyncio.CancelledError:
                self._held.setdefault(bucket, []).extend(markers)  # for `close`
                raise
            except Exception as exc:
                log.warning("inbox markers not written", markers=len(markers), error=repr(exc))

    async def close(self) -> None:
        """Write what is held now (a stop)."""
        due, self._due = self._due, None
        await stopped(due)
        with contextlib.suppress(Exception):
            await self.flush()


class Commits:
    """The consumers' offsets, committed together: after its effect, a record's offset is held,
    and a consumer's held offsets go in one request, `every` seconds at most, instead of a
    commit after each record (each one a write to the broker's offsets log: in the journey's
    burst the broker spent some 17% less CPU a case with them held).

    Only offsets of records whose effect is stored are ever committed, each consumer's of the
    partitions it still owns. A crash, or a partition handed to another copy, before the held
    offsets go makes those records come again: the inbox and the handlers' own state turn them
    away, as after any redelivery. Once stopping (`close`), every offset is committed at once,
    so the handlers a stop lets finish are committed before their consumers close.
    """

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.stopping = False
        self._held: dict[int, tuple[AIOKafkaConsumer, dict[TopicPartition, int]]] = {}
        self._due: asyncio.Task[None] | None = None
        # Per consumer and partition: the offsets of records taken and not done, and the one
        # after the last taken (records side by side, `Lanes`, end in any order).
        self._open: dict[tuple[int, TopicPartition], tuple[set[int], int]] = {}

    def taken(self, record: ConsumerRecord[bytes, bytes], consumer: AIOKafkaConsumer) -> None:
        """`record` is being handled: no offset past it is committed before it is done."""
        where = (id(consumer), TopicPartition(record.topic, record.partition))
        handling, after = self._open.get(where, (set(), 0))
        handling.add(record.offset)
        self._open[where] = (handling, max(after, record.offset + 1))

    async def done(self, record: ConsumerRecord[bytes, bytes], consumer: AIOKafkaConsumer) -> None:
        """The effect of `record` is stored: the offset after every record of its partition
        that is done, up to the oldest still being handled, is to be committed."""
        tp = TopicPartition(record.topic, record.partition)
        handling, after = self._open.get((id(consumer), tp), (set(), record.offset + 1))
        handling.discard(record.offset)
        if not handling:
            self._open.pop((id(consumer), tp), None)
        offsets = {tp: min(handling, default=after)}
        if self.stopping:
            await self._commit(consumer, offsets)
            return
        self._held.setdefault(id(consumer), (consumer, {}))[1].update(offsets)
        if self._due is None or self._due.done():
            self._due = asyncio.create_task(self._after(), name="offset-commits")

    async def _after(self) -> None:
        await asyncio.sleep(self.every)
        await self.flush()

    async def flush(self) -> None:
        """Commit every offset held, one request per consumer."""
        while self._held:
            _, (consumer, offsets) = self._held.popitem()
            await self._commit(consumer, offsets)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        owned = consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in owned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance, the broker away: the records come again
            log.info("offsets not committed", error=type(exc).__name__, partitions=len(offsets))

    async def close(self) -> None:
        """From now on commit each offset at once, and commit those held (a stop)."""
        self.stopping = True
        due, self._due = self._due, None
        await stopped(due)
        await self.flush()


class Lanes:
    """The records of one subscription handled side by side: up to `width` at once, those of
    one key (a case) one after another in the order they came, so a case's events keep their
    order while different cases' do not wait for each other (the consumer goes on fetching
    while they are handled). `Commits` commits a partition's offset only up to its oldest
    record still being handled.

    Once closing, no record is started any more: it stays uncommitted, with every record after
    it in its partition, and comes again to whichever copy consumes the partition next.
    """

    def __init__(self, width: int) -> None:
        self.closing = False
        self._room = asyncio.Semaphore(width)
        self._last: dict[tuple[int, bytes | None], asyncio.Task[None]] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def take(
        self, record: ConsumerRecord[bytes, bytes], work: Callable[[], Awaitable[None]]
    ) -> None:
        """Start `work` on `record` once there is room, after the work on the records of the
        same key taken before it; returns once it has started."""
        await self._room.acquire()
        if self.closing:
            self._room.release()
            return
        key = (record.partition, record.key)
        before = self._last.get(key)
        task = asyncio.create_task(self._after(before, work), name="consumer-lane")
        self._last[key] = task
        self._running.add(task)
        task.add_done_callback(lambda finished: self._finished(key, finished))

    @staticmethod
    async def _after(
        before: asyncio.Task[None] | None, work: Callable[[], Awaitable[None]]
    ) -> None:
        if before is not None:
            await asyncio.wait([before])
        await work()

    def _finished(self, key: tuple[int, bytes | None], task: asyncio.Task[None]) -> None:
        self._room.release()
        self._running.discard(task)
        if self._last.get(key) is task:
            del self._last[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("record not handled", error=type(task.exception()).__name__)

    async def close(self, grace: float) -> None:
        """Start nothing more, and let what has started finish, `grace` seconds at most (then
        it is cancelled, uncommitted)."""
        self.closing = True
        running = set(self._running)
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=grace)
        await asyncio.gather(*(stopped(task) for task in late))


class Messaging:
    """Publishing and consuming for one service, on top of its broker and its own database."""

    def __init__(self, settings: CommonSettings, broker: KafkaBroker, db: AsyncDatabase[Document]):
        self.settings = settings
        self.service = settings.service_name
        self.broker = broker
        self.db = db
        self.group_id = f"avis-{self.service}"
        self.marks = Marks(db)
        self.commits = Commits()
        self.lanes: list[Lanes] = []  # the subscriptions' handled side by side

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
        keep = inbox_days(self.settings)
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

    def subscribe(
        self, topic: str, handler: Handler, inbox_use: Callable[[str], InboxUse] | None = None
    ) -> None:
        """Consume `topic` in this service's group: the effect first, the offset after.
        `inbox_use` says, by event type, what the inbox does for it (`InboxUse`; all of it
        without)."""
        workers = self.settings.consumer_workers
        width = self.settings.consumer_in_flight
        lanes = Lanes(width) if width > 1 else None
        if lanes is not None:
            self.lanes.append(lanes)

        # MANUAL: FastStream's default commits before processing; we commit after the effect.
        @self.broker.subscriber(
            topic,
            group_id=self.group_id,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            decoder=undecoded,
            parser=tolerant_parse,
            max_workers=workers,
            partition_assignment_strategy=ASSIGNORS,
        )
        async def consume(msg: KafkaMessage) -> None:
            record, consumer = msg.raw_message, msg.consumer
            self.commits.taken(record, consumer)

            async def handle() -> None:
                await self.process(record, handler, inbox_use)
                await self.commits.done(record, consumer)

            if lanes is None:
                await handle()
            else:
                await lanes.take(record, handle)

    async def process(
        self,
        record: ConsumerRecord[bytes, bytes],
        handler: Handler,
        inbox_use: Callable[[str], InboxUse] | None = None,
    ) -> str:
        """Apply one record's effect exactly once; returns the outcome ("skipped": a type
        this service does nothing with)."""
        topic = record.topic
        headers = dict(record.headers or ())
        try:
            event = Event.from_kafka(topic, headers, record.value or b"")
        except PoisonMessage as exc:
            await self.dead_letter(record, str(exc), attempts=1)
            return "dead-lettered"
        use = InboxUse.FULL if inbox_use is None else inbox_use(event.type)
        if use == InboxUse.NONE:
            EVENTS_CONSUMED.labels(self.service, topic, event.type, "skipped").inc()
            return "skipped"
        marker = f"{self.group_id}:{event.id}"
        structlog.contextvars.bind_contextvars(event_id=event.id, case_id=event.subject)
        try:
            return await self._apply(
                record, event, marker, handler, use == InboxUse.FULL, use != InboxUse.OWN
            )
        finally:
            structlog.contextvars.unbind_contextvars("event_id", "case_id")

    async def _apply(
        self,
        record: ConsumerRecord[bytes, bytes],
        event: Event,
        marker: str,
        handler: Handler,
        look_up: bool = True,
        mark: bool = True,
    ) -> str:
        cap = self.settings.retry_backoff_max_seconds
        errors, transient = Backoff(cap), Backoff(cap)
        while True:
            try:
                inbox = self.inbox(event)
                if look_up and await inbox.find_one({"_id": marker}, {"_id": 1}):
                    EVENTS_CONSUMED.labels(self.service, event.topic, event.type, "duplicate").inc()
                    return "duplicate"
                with HANDLER_SECONDS.labels(self.service, event.topic).time():
                    try:
                        await handler(event, event.payload())
                    except CaseKeyDestroyed:
                        # The case was erased: nothing of it opens, nor needs to be applied.
                        log.info("event of an erased case skipped")
                at = datetime.now(UTC)
                written = {"_id": marker, "topic": event.topic, "type": event.type, "at": at}
                if look_up:
                    with contextlib.suppress(DuplicateKeyError):
                        await inbox.insert_one(written)
                elif mark:  # the handler's own write recorded it: the marker goes with others
                    self.marks.add(inbox.name, written)
                EVENTS_CONSUMED.labels(self.service, event.topic, event.type, "applied").inc()
                return "applied"
            except PoisonMessage as exc:
                await self.dead_letter(record, str(exc), attempts=errors.attempt + 1)
                return "dead-lettered"
            except Exception as exc:
                if isinstance(exc, TRANSIENT) or store_busy(exc):
                    # Never dead-lettered: the store or broker will come back (or be free), or
                    # the event we depend on will arrive. The partition waits; order holds.
                    EVENTS_FAILED.labels(self.service, event.topic, "transient").inc()
                    delay = transient.next_delay()
                    if transient.attempt == 1:  # once per event: an outage is reported elsewhere
                        log.warning("event retried", error=type(exc).__name__)
                    await asyncio.sleep(delay)
                    continue
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
            k: (v or b"").decode(errors="replace")
            for k, v in (record.headers or ())
            if not k.startswith(DLQ_PREFIX)
        }
        where = {f"{DLQ_PREFIX}partition": str(record.partition)}
        where[f"{DLQ_PREFIX}offset"] = str(record.offset)
        await self._dead_letter(
            record.topic, record.key, record.value or b"", headers | where, reason, attempts
        )

    async def give_up(self, event: Event, reason: str) -> None:
        """Dead-letter an event this group already took in (parked), and forget having taken it.

        The marker goes after the dead letter is acknowledged, so a replay of the letter is
        applied again rather than skipped as a duplicate; a crash between the two leaves the
        letter written twice at worst, and the replay applies it once.
        """
        await self._dead_letter(
            event.topic, event.subject.encode(), event.body(), event.headers(), reason, 1
        )
        await self.inbox(event).delete_one({"_id": f"{self.group_id}:{event.id}"})

    async def _dead_letter(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: dict[str, str],
        reason: str,
        attempts: int,
    ) -> None:
        headers = headers | {
            f"{DLQ_PREFIX}reason": reason,
            f"{DLQ_PREFIX}attempts": str(attempts),
            f"{DLQ_PREFIX}topic": topic,
            f"{DLQ_PREFIX}group": self.group_id,
            f"{DLQ_PREFIX}time": datetime.now(UTC).isoformat(),
        }
        retry = Backoff(self.settings.retry_backoff_max_seconds)
        while True:
            try:
                await self.broker.publish(value, topic=dlq(topic), key=key, headers=headers)
                break
            except KafkaError as exc:
                if retry.attempt == 0:
                    log.warning("dead letter not yet written", error=type(exc).__name__)
                await retry.wait()
        EVENTS_DEAD_LETTERED.labels(self.service, topic).inc()
        log.error("event dead-lettered", topic=topic, reason=reason, attempts=attempts)


async def partitions_of(kafka: KafkaAccess, topic: str) -> list[int]:
    """The partition numbers of `topic`."""
    admin = AIOKafkaAdminClient(**kafka.options())
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in description["partitions"])
    finally:
        await admin.close()


async def replay(
    kafka: KafkaAccess, topic: str, limit: int | None = None, timeout: float = 10.0
) -> int:
    """Put the dead letters of `topic` back on it, with their original headers; returns the count.

    Stops by itself once it has caught up with the end of `<topic>.dlq` (or after `limit`).
    """
    source = dlq(topic)
    consumer = AIOKafkaConsumer(
        **kafka.options(),
        group_id=REPLAY_GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(**kafka.options(), acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    replayed = 0
    try:
        partitions = [TopicPartition(source, p) for p in await partitions_of(kafka, source)]
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


async def dlq_depths(kafka: KafkaAccess, topics: Sequence[str]) -> dict[str, int]:
    """Dead letters not yet replayed, per main topic: the end offsets of `<topic>.dlq` minus
    what the replay group (`avis-dlq-replay`) has committed there (nothing committed: all)."""
    sources = [dlq(t) for t in topics]
    admin = AIOKafkaAdminClient(**kafka.options(), request_timeout_ms=10000)
    consumer = AIOKafkaConsumer(**kafka.options(), group_id=None)
    await admin.start()
    try:
        await consumer.start()
        committed = await admin.list_consumer_group_offsets(REPLAY_GROUP)
        partitions = [
            TopicPartition(source, p)
            for source in sources
            for p in await partitions_of(kafka, source)
        ]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
        await admin.close()
    depths = dict.fromkeys(topics, 0)
    for tp, end in ends.items():
        done = committed.get(tp)
        replayed = done.offset if done is not None and done.offset >= 0 else 0
        depths[tp.topic.removesuffix(".dlq")] += max(0, end - replayed)
    return depths


async def watch_dlq_depths(
    service: str, kafka: KafkaAccess, topics: Sequence[str], every: float
) -> None:
    """Keep the `avis_dlq_depth` gauge of each dead-letter topic of `topics` current."""
    while True:
        try:
            for topic, depth in (await dlq_depths(kafka, topics)).items():
                DLQ_DEPTH.labels(service, dlq(topic)).set(depth)
        except Exception as exc:  # a gauge outlives any failure: measured again next time
            log.debug("dead-letter depth not measured this time", error=type(exc).__name__)
        await asyncio.sleep(every)


def replay_main() -> None:
    """`avis-dlq-replay TOPIC`: put the dead letters of TOPIC back on it."""
    parser = argparse.ArgumentParser(description=replay_main.__doc__)
    parser.add_argument("topic", help="the main topic, e.g. case-submitted (not the .dlq)")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    settings = CommonSettings()
    topic = args.topic.removesuffix(".dlq")
    count = asyncio.run(replay(KafkaAccess.admin(settings.kafka_bootstrap), topic, args.limit))
    print(f"replayed {count} dead letter(s) from {dlq(topic)} to {topic}")
