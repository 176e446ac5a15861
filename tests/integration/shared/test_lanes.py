"""Records handled side by side (`avis.shared.kafka.Lanes`) on the real broker and store: the
cases of one partition do not wait for each other, a case's own events go one after another,
and a partition's offset is committed only up to its oldest record still being handled, so a
stop while one is handled gives it again to the next consumer."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from avis.shared.envelope import Event
from avis.shared.runtime import Runtime
from tests.support.basics import KAFKA, eventually, make_settings, unique
from tests.support.consumer import withdrawn
from tests.support.topics import to_partition_zero

pytestmark = pytest.mark.infra


class Handler:
    """Notes when each event's handling starts and ends; `slow`'s events wait for `release`."""

    def __init__(self, slow: str) -> None:
        self.slow = slow
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.ended: list[str] = []

    async def __call__(self, event: Event, payload: object) -> None:
        self.started.append(event.id)
        if event.subject == self.slow:
            await self.release.wait()
        self.ended.append(event.id)


async def events_to_partition_zero(topic: str, events: list[Event]) -> None:
    """Publish `events` in order, all to the topic's partition 0, keyed by case."""
    await to_partition_zero(
        topic,
        [
            (e.subject.encode(), e.body(), [(k, v.encode()) for k, v in e.headers().items()])
            for e in events
        ],
    )


async def committed(group_id: str, topic: str) -> int | None:
    """The offset `group_id` committed for the topic's partition 0."""
    reader = AIOKafkaConsumer(**KAFKA.options(), group_id=group_id, enable_auto_commit=False)
    await reader.start()
    try:
        return await reader.committed(TopicPartition(topic, 0))
    finally:
        await reader.stop()


async def started_runtime(topic: str, handler: Handler, group: str) -> Runtime:
    runtime = Runtime(
        make_settings(service=group, consumer_in_flight=4, shutdown_grace_seconds=0.5)
    )
    runtime.subscribe(topic, handler)
    await runtime.start()
    await eventually(lambda: runtime.kafka_started)
    return runtime


def three_events(topic: str) -> tuple[Event, Event, Event]:
    """A slow case's two events and another case's one, to be published in that order."""
    slow, other = unique("case"), unique("case")
    return withdrawn(topic, slow), withdrawn(topic, slow), withdrawn(topic, other)


async def test_a_partitions_cases_go_side_by_side_and_a_cases_events_in_order(
    topic: str,
) -> None:
    first, second, other = three_events(topic)
    handler = Handler(slow=first.subject)
    group = unique("lanes")
    runtime = await started_runtime(topic, handler, group)
    try:
        await events_to_partition_zero(topic, [first, second, other])
        await eventually(lambda: other.id in handler.ended)
        assert first.id not in handler.ended, "the slow case is still being handled"
        assert second.id not in handler.started, "a case's next event waits for the one before"
        group_id = runtime.messaging.group_id
        # The other case is done: its offset is held for the oldest record still handled.
        await eventually(lambda: committed_is(group_id, topic, 0), timeout=10)
        await asyncio.sleep(1.0)  # two commit rounds
        assert await committed(group_id, topic) == 0

        handler.release.set()
        await eventually(lambda: handler.ended[-2:] == [first.id, second.id])
        assert handler.started.index(second.id) > handler.started.index(first.id)
        await eventually(lambda: committed_is(group_id, topic, 3), timeout=10)
    finally:
        handler.release.set()
        await runtime.stop()


async def test_a_record_still_handled_at_a_stop_comes_again_to_the_next_consumer(
    topic: str,
) -> None:
    first, second, other = three_events(topic)
    stopping = Handler(slow=first.subject)  # never released: cut after the stop's grace
    group = unique("lanes")
    runtime = await started_runtime(topic, stopping, group)
    try:
        await events_to_partition_zero(topic, [first, second, other])
        await eventually(lambda: other.id in stopping.ended)
    finally:
        await runtime.stop()
    assert stopping.ended == [other.id]
    assert await committed(runtime.messaging.group_id, topic) == 0

    following = Handler(slow="nobody")
    runtime = await started_runtime(topic, following, group)
    try:
        # Both of the slow case's events come again; the other case's was handled once.
        await eventually(lambda: following.ended[:2] == [first.id, second.id])
    finally:
        await runtime.stop()
    assert other.id not in following.ended, "the inbox turned the handled one away"


async def committed_is(group_id: str, topic: str, offset: int) -> bool:
    return await committed(group_id, topic) == offset
