"""Offsets committed together (`avis.shared.kafka.Commits`) on the real broker: a consumer's
offsets are held after each record's effect and go in one commit within `every` seconds; only
partitions the consumer owns are committed; once stopping, each offset goes at once; a
partition's offset waits for its oldest record still being handled."""

import contextlib
import dataclasses
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from avis.shared.kafka import Commits
from tests.support.basics import KAFKA, eventually, unique
from tests.support.topics import fill_partition_zero

pytestmark = pytest.mark.infra


@contextlib.asynccontextmanager
async def read_from_partition_zero(
    topic: str, count: int
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[ConsumerRecord[bytes, bytes]]]]:
    """A consumer of a group of its own holding the topic's partition 0, and the `count`
    records just written there, read by it."""
    await fill_partition_zero(topic, count)
    consumer = AIOKafkaConsumer(
        **KAFKA.options(), group_id=unique("avis-commits"), enable_auto_commit=False
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        yield consumer, [await consumer.getone() for _ in range(count)]
    finally:
        await consumer.stop()


async def test_offsets_are_held_then_committed_together_and_at_once_when_stopping(
    topic: str,
) -> None:
    tp, elsewhere = TopicPartition(topic, 0), TopicPartition(topic, 1)
    async with read_from_partition_zero(topic, 4) as (consumer, records):
        commits = Commits(every=0.5)
        for record in records[:3]:
            await commits.done(record, consumer)
        assert await consumer.committed(tp) is None, "held, not committed record by record"
        await eventually(lambda: _committed(consumer, tp, 3), timeout=10)

        await commits.close()
        await commits.done(records[3], consumer)  # stopping: committed at once
        assert await consumer.committed(tp) == 4
        # A partition the consumer does not own (handed to another copy) is left out.
        await commits.done(dataclasses.replace(records[3], partition=1), consumer)
        assert await consumer.committed(elsewhere) is None


async def test_an_offset_waits_for_the_oldest_record_of_its_partition_still_handled(
    topic: str,
) -> None:
    tp = TopicPartition(topic, 0)
    async with read_from_partition_zero(topic, 3) as (consumer, records):
        commits = Commits(every=0.1)
        for record in records:
            commits.taken(record, consumer)
        await commits.done(records[2], consumer)
        await commits.done(records[1], consumer)
        await eventually(lambda: _committed(consumer, tp, 0), timeout=10)
        await commits.done(records[0], consumer)  # the oldest: all three are done
        await eventually(lambda: _committed(consumer, tp, 3), timeout=10)


async def _committed(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> bool:
    return await consumer.committed(tp) == offset
