"""Two copies of a service against the real broker: every topic's partition p lands at the
same copy, so the events of one case (partition p of each topic, keyed by the case) are all
applied by one copy and never update the case at two copies at once."""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from avis.shared.envelope import Event
from avis.shared.kafka import Messaging, make_broker
from tests.support.basics import KAFKA, eventually, make_settings, unique

pytestmark = pytest.mark.infra

PARTITIONS = 6


@pytest.fixture
async def three_topics() -> AsyncIterator[list[str]]:
    names = [unique("owned") for _ in range(3)]
    admin = AIOKafkaAdminClient(**KAFKA.options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
        yield names
    finally:
        await admin.delete_topics(names)
        await admin.close()


async def nothing(event: Event, payload: object) -> None:
    """A handler the test never reaches: the topics stay empty."""


@pytest.mark.timeout(60)
async def test_a_member_asks_to_join_with_one_protocol_list(
    three_topics: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A JoinGroup with other metadata than the member's last one starts the group's rebalance
    again. aiokafka sends one JoinGroup per listed assignor, each listing the assignors so far,
    and with two listed a group of several members went on rebalancing for minutes
    (docs/replicas.md). So a member lists one assignor, range, in every request, retries
    (a coordinator still loading, or moved) included."""
    caplog.set_level(logging.DEBUG, logger="aiokafka.consumer.group_coordinator")
    settings = make_settings()
    broker = make_broker(settings)
    Messaging(settings, broker, db=None).subscribe(three_topics[0], nothing)  # type: ignore[arg-type]
    async with asyncio.timeout(45):
        await broker.start()
    try:
        joins = [r.args[0] for r in caplog.records if r.msg.startswith("Sending JoinGroup")]  # type: ignore[union-attr]
        # The request's protocols (name, metadata), as the library keeps them.
        listed = {tuple(name for name, _ in j._group_protocols) for j in joins}
        assert joins and listed == {("range",)}, listed
    finally:
        await broker.stop()


def consumers(subscriber: Any) -> list[Any]:
    """The aiokafka consumers behind one subscriber (several with several workers)."""
    return list(getattr(subscriber, "consumer_subgroup", None) or [subscriber.consumer])


# One worker per topic (the default) and several (more members in the group, where the endless
# rebalancing with two assignors listed came most often: docs/replicas.md).
@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
async def test_partition_p_of_every_topic_is_at_one_copy(
    three_topics: list[str], workers: int
) -> None:
    # One service name: one consumer group for both copies, as copies run.
    settings = make_settings(consumer_workers=workers)
    brokers = [make_broker(settings) for _ in range(2)]
    for broker in brokers:
        messaging = Messaging(settings, broker, db=None)  # type: ignore[arg-type]
        for topic in three_topics:
            messaging.subscribe(topic, nothing)  # one consumer per topic, as a service has
    # A start waits for the group's first assignment.
    async with asyncio.timeout(60):
        await asyncio.gather(*(broker.start() for broker in brokers))
    try:

        def owners() -> dict[TopicPartition, int] | None:
            owner: dict[TopicPartition, int] = {}
            for copy, broker in enumerate(brokers):
                for subscriber in broker.subscribers:
                    for tp in {tp for c in consumers(subscriber) if c for tp in c.assignment()}:
                        if tp in owner:
                            return None  # a rebalance under way: two claim one partition
                        owner[tp] = copy
            settled = len(owner) == PARTITIONS * len(three_topics)
            return owner if settled and len(set(owner.values())) == 2 else None

        owner = await eventually(owners, timeout=60)
        for p in range(PARTITIONS):
            at = {owner[TopicPartition(topic, p)] for topic in three_topics}
            assert len(at) == 1, f"partition {p} is at copies {at} across the topics"
    finally:
        async with asyncio.timeout(30):
            await asyncio.gather(*(broker.stop() for broker in brokers))
