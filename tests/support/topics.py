"""The one topic reader of the tests: what is published on some topics from a starting point
on, read from the broker as a test asks for it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from avis.shared.kafka import partitions_of
from tests.support.basics import KAFKA, eventually

Record = ConsumerRecord[bytes, bytes]
Headers = list[tuple[str, bytes]]


async def to_partition_zero(topic: str, records: Sequence[tuple[bytes, bytes, Headers]]) -> None:
    """Write `records` (key, value, headers) in order, all to the topic's partition 0."""
    producer = AIOKafkaProducer(**KAFKA.options())
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, partition=0, key=key, headers=headers)
    finally:
        await producer.stop()


async def fill_partition_zero(topic: str, count: int) -> None:
    """`count` records on the topic's partition 0, keyed k0, k1... (for tests of offsets and
    lag, which never read their bodies)."""
    await to_partition_zero(topic, [(f"k{i}".encode(), b"x", []) for i in range(count)])


def header(record: Record, name: str) -> str:
    """One header of a record, decoded ('' when absent)."""
    value: bytes = dict(record.headers or ()).get(name, b"")
    return value.decode()


class TopicReader:
    """Reads `topics` from where they ended when `mark` was called (only what came after), or
    from their beginning. Each read fetches what arrived since the last one, up to the topics'
    current end, and keeps it in `records` (in the order of each partition)."""

    def __init__(self, *topics: str) -> None:
        self.topics = topics
        self.next: dict[TopicPartition, int] = {}
        self.records: list[Record] = []

    async def mark(self, *, from_beginning: bool = False) -> TopicReader:
        """Start at the topics' end now (or at their beginning)."""
        consumer = AIOKafkaConsumer(**KAFKA.options())
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in self.topics for p in await partitions_of(KAFKA, t)]
            offsets = consumer.beginning_offsets if from_beginning else consumer.end_offsets
            self.next = dict(await offsets(tps))
        finally:
            await consumer.stop()
        return self

    async def read(self) -> list[Record]:
        """Every record published on the topics since the mark, up to their current end."""
        consumer = AIOKafkaConsumer(**KAFKA.options(), enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(list(self.next))
            for tp, offset in self.next.items():
                consumer.seek(tp, offset)
            ends = await consumer.end_offsets(list(self.next))
            while [tp for tp in self.next if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    self.records.extend(records)
            self.next = {tp: await consumer.position(tp) for tp in self.next}
        finally:
            await consumer.stop()
        return self.records

    async def caught_up(self) -> None:
        """Read to the topics' current end: after this, a record missing is one never sent (so
        far) by a service whose outbox is empty."""
        await self.read()

    def of(self, key: str, ce_type: str | None = None) -> list[Record]:
        """The records read so far keyed `key` (optionally of one type), in the order they came."""
        return [
            r
            for r in self.records
            if r.key == key.encode() and (ce_type is None or header(r, "ce_type") == ce_type)
        ]

    def payloads(self, key: str, ce_type: str) -> list[dict[str, Any]]:
        """The JSON bodies of the records read so far keyed `key`, of one type."""
        return [json.loads(r.value or b"{}") for r in self.of(key, ce_type)]

    async def records_for(
        self, key: str, expect: int = 1, timeout: float = 30.0, ce_type: str | None = None
    ) -> list[Record]:
        """The records keyed `key` (of one type, if given), once at least `expect` of them
        arrived; fails at the deadline."""

        async def enough() -> bool:
            await self.read()
            return len(self.of(key, ce_type)) >= expect

        await eventually(enough, timeout=timeout)
        return self.of(key, ce_type)

    async def wait(
        self, key: str, ce_type: str, count: int = 1, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """The payloads keyed `key` of that type, once at least `count` arrived; fails at the
        deadline."""
        await self.records_for(key, count, timeout, ce_type)
        return self.payloads(key, ce_type)

    async def settled(self, expect: int = 0, timeout: float = 30.0) -> list[Record]:
        """Every record since the mark, once at least `expect` arrived and half a second more
        brought nothing new (or, at the deadline, whatever arrived)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = -1
        while loop.time() < deadline:
            records = await self.read()
            if len(records) >= expect and len(records) == seen:
                break
            seen = len(records)
            await asyncio.sleep(0.5)
        return self.records


async def read_topic(topic: str, expect: int, timeout: float = 30.0) -> list[Record]:
    """Every record on `topic` from its beginning, once at least `expect` arrived and no more
    came (or, at the deadline, whatever arrived)."""
    reader = await TopicReader(topic).mark(from_beginning=True)
    return await reader.settled(expect, timeout)
