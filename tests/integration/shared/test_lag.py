"""The consumer-lag exporter against the real broker: a group's lag per partition, in messages
and in seconds, moves as messages are written and consumed; the store and broker answer."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from avis.shared.lag import measure, publish, store_answers
from tests.support.basics import KAFKA, MONGO_URL, unique
from tests.support.topics import fill_partition_zero

pytestmark = pytest.mark.infra


async def test_lag_per_group_and_partition_moves_with_consumption(topic: str) -> None:
    group = unique("avis-lagtest")
    await fill_partition_zero(topic, 3)
    consumer = AIOKafkaConsumer(**KAFKA.options(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        await consumer.commit({tp: 1})  # the group has read one of three
        await asyncio.sleep(1.2)
        lags = {
            (lag.topic, lag.partition): lag for lag in await measure(KAFKA) if lag.group == group
        }
        assert lags[(topic, 0)].behind == 2
        assert lags[(topic, 0)].seconds >= 1.0  # the oldest unread message's age
        publish(list(lags.values()))
        labels = {"group": group, "topic": topic, "partition": "0"}
        assert REGISTRY.get_sample_value("avis_consumer_lag", labels) == 2
        await consumer.commit({tp: 3})  # caught up
        caught_up = [lag for lag in await measure(KAFKA) if lag.group == group]
        assert [(lag.behind, lag.seconds) for lag in caught_up] == [(0, 0.0)]
    finally:
        await consumer.stop()


async def test_store_reachability() -> None:
    assert await store_answers(MONGO_URL)
    assert not await store_answers("mongodb://127.0.0.1:9")  # nothing listens on port 9
