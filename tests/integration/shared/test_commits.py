"""Offsets committed together (`avis.shared.kafka.Commits`) on the real broker: a consumer's
offsets are held after each record's effect and go in one commit within `every` seconds; only
partitions the consumer owns are committed; once stopping, each offset goes at once."""

import dataclasses

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from avis.shared.kafka import Commits
from tests.support.basics import KAFKA, eventually, unique

pytestmark = pytest.mark.infra


async def test_offsets_are_held_then_committed_together_and_at_once_when_stopping(
    topic: str,
) -> None:
    producer = AIOKafkaProducer(**KAFKA.options())
    await producer.start()
    try:
        for i in range(4):
            await producer.send_and_wait(topic, b"x", partition=0, key=f"k{i}".encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        **KAFKA.options(), group_id=unique("avis-commits"), enable_auto_commit=False
    )
    await consumer.start()
    tp, elsewhere = TopicPartition(topic, 0), TopicPartition(topic, 1)
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        records = [await consumer.getone() for _ in range(4)]
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
    finally:
        await consumer.stop()


async def _committed(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> bool:
    return await consumer.committed(tp) == offset


async def test_an_offset_waits_for_the_oldest_record_of_its_partition_still_handled(
    topic: str,
) -> None:
    producer = AIOKafkaProducer(**KAFKA.options())
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, b"x", partition=0, key=f"k{i}".encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        **KAFKA.options(), group_id=unique("avis-commits"), enable_auto_commit=False
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        records = [await consumer.getone() for _ in range(3)]
        commits = Commits(every=0.1)
        for record in records:
            commits.taken(record, consumer)
        await commits.done(records[2], consumer)
        await commits.done(records[1], consumer)
        await eventually(lambda: _committed(consumer, tp, 0), timeout=10)
        await commits.done(records[0], consumer)  # the oldest: all three are done
        await eventually(lambda: _committed(consumer, tp, 3), timeout=10)
    finally:
        await consumer.stop()
