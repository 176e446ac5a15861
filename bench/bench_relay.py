"""Outbox relay and idempotent consumer throughput on the real broker and store.

Prints events per second for:
  baseline-produce  aiokafka send_and_wait, one event at a time (the broker's ack round trip)
  relay             aggregates written with their event, drained by the relay (publish + mark)
  baseline-consume  a plain aiokafka consumer reading the same number of records
  consumer          the idempotent consumer (inbox check, effect, marker, commit)
and the ratio of each to its baseline measured in the same run.
Usage: make bench  (or: python bench/bench_relay.py [N])
"""

import asyncio
import dataclasses
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from avis.shared.envelope import Event
from avis.shared.events import CaseWithdrawn
from avis.shared.kafka_access import KafkaAccess
from avis.shared.outbox import Relay, new_with_events
from avis.shared.runtime import Runtime
from avis.shared.settings import CommonSettings

BOOTSTRAP = os.environ.get("AVIS_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
# The benchmark's own clients connect as the broker's administrator (deploy/local/test.sh).
KAFKA = KafkaAccess.admin(BOOTSTRAP)
MONGO = os.environ.get("AVIS_MONGO_URL", "mongodb://127.0.0.1:27117")


def settings(name: str) -> CommonSettings:
    """A service's settings on the bench's stack, reaching the broker with the benchmark's own
    identity (its administrator's: the broker serves no anonymous client)."""
    return CommonSettings(
        service_name=name,
        mongo_database=f"bench_{name}",
        kafka_bootstrap=BOOTSTRAP,
        kafka_username=KAFKA.username,
        kafka_password=KAFKA.password,
        mongo_url=MONGO,
        jwt_secret="bench-" + "x" * 40,
        avis_env="development",
        log_level="WARNING",
        log_format="json",
    )


def event(topic: str) -> Event:
    payload = CaseWithdrawn(case_id=uuid.uuid4().hex, withdrawn_at=datetime.now(UTC))
    return dataclasses.replace(Event.new(payload, "/avis/bench"), topic=topic)


async def wait_until(check: Any, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - polling a flag another task sets
            await asyncio.sleep(0.1)


async def baseline_produce(topic: str, n: int) -> float:
    producer = AIOKafkaProducer(**KAFKA.options(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        start = time.perf_counter()
        for _ in range(n):
            e = event(topic)
            headers = [(k, v.encode()) for k, v in e.headers().items()]
            await producer.send_and_wait(topic, e.body(), key=e.subject.encode(), headers=headers)
        return n / (time.perf_counter() - start)
    finally:
        await producer.stop()


async def relay_rate(topic: str, n: int) -> float:
    runtime = Runtime(settings(f"relay{uuid.uuid4().hex[:6]}"))
    await runtime.start()
    await wait_until(lambda: runtime.kafka_started)
    try:
        aggregates = runtime.db["aggregates"]
        relay = Relay("bench", runtime.messaging.send, runtime.locks)
        relay.watch(aggregates)
        for _ in range(n):
            e = event(topic)
            async with relay.publishing(aggregates, e.subject):
                await aggregates.insert_one(new_with_events({"_id": e.subject}, [e]))
        start = time.perf_counter()
        published = await relay.drain()
        elapsed = time.perf_counter() - start
        assert published == n, (published, n)
        return n / elapsed
    finally:
        await runtime.db.client.drop_database(runtime.db.name)
        await runtime.stop()


async def baseline_consume(topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(
        topic, **KAFKA.options(), group_id=f"b{uuid.uuid4().hex}",
        auto_offset_reset="earliest", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    try:
        seen, start = 0, time.perf_counter()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for _ in records:
                    seen += 1
                    await consumer.commit()
        return n / (time.perf_counter() - start)
    finally:
        await consumer.stop()


async def consumer_rate(topic: str, n: int) -> float:
    runtime = Runtime(settings(f"cons{uuid.uuid4().hex[:6]}"))
    done = asyncio.Event()
    seen = 0
    effects = runtime.db["effects"]

    async def handle(e: Event, payload: Any) -> None:
        nonlocal seen
        await effects.insert_one({"_id": e.id})
        seen += 1
        if seen >= n:
            done.set()

    runtime.subscribe(topic, handle)
    start = time.perf_counter()
    await runtime.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=600)
        return n / (time.perf_counter() - start)
    finally:
        await runtime.db.client.drop_database(runtime.db.name)
        await runtime.stop()


async def main(n: int) -> None:
    topics = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    admin = AIOKafkaAdminClient(**KAFKA.options())
    await admin.start()
    await admin.create_topics([NewTopic(t, 6, 1) for t in topics])
    try:
        produce = await baseline_produce(topics[0], n)
        relay = await relay_rate(topics[1], n)
        consume = await baseline_consume(topics[1], n)
        consumer = await consumer_rate(topics[1], n)
    finally:
        await admin.delete_topics(topics)
        await admin.close()
    print(f"events: {n}")
    print(f"baseline-produce  {produce:8.1f} ev/s")
    print(f"relay             {relay:8.1f} ev/s   ratio to baseline {relay / produce:5.2f}")
    print(f"baseline-consume  {consume:8.1f} ev/s")
    print(f"consumer          {consumer:8.1f} ev/s   ratio to baseline {consumer / consume:5.2f}")


if __name__ == "__main__":
    # `make bench BENCH_ARGS=...` hands every benchmark the same flags: take a count, skip flags.
    counts = [int(a) for a in sys.argv[1:] if a.isdigit()]
    asyncio.run(main(counts[0] if counts else 200 if "--quick" in sys.argv else 500))
