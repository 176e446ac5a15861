"""Consumer lag per group and partition, and the broker's and store's reachability, as Prometheus
metrics: `python -m avis.shared.lag` serves them on /metrics for the metrics store to scrape.

It runs apart from the services, so a consumer that has stopped (or crashed) still shows as
behind, and the broker or store away still shows as down, whatever the services are doing.
"""

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Gauge, start_http_server
from pymongo import AsyncMongoClient

from avis.shared.kafka import REPLAY_GROUP
from avis.shared.kafka_access import KafkaAccess

log = structlog.get_logger("avis.lag")

CONSUMER_LAG = Gauge(
    "avis_consumer_lag",
    "Messages not yet consumed: the partition's end offset minus the group's committed offset",
    ["group", "topic", "partition"],
)
CONSUMER_LAG_SECONDS = Gauge(
    "avis_consumer_lag_seconds",
    "Age of the oldest message the group has not consumed yet (0 when it has caught up)",
    ["group", "topic", "partition"],
)
DEPENDENCY_UP = Gauge(
    "avis_dependency_up", "1 when the dependency answered the last check, else 0", ["dependency"]
)
LAG_MEASURED = Gauge(
    "avis_lag_measured_timestamp_seconds", "When consumer lag was last measured (Unix time)"
)
GROUP_PREFIX = "avis-"  # the services' groups are avis-<service>


@dataclass(frozen=True)
class Lag:
    """How far one group is behind on one partition."""

    group: str
    topic: str
    partition: int
    behind: int
    seconds: float


async def measure(kafka: KafkaAccess, *, prefix: str = GROUP_PREFIX) -> list[Lag]:
    """The lag of every group named `prefix`... on every partition it has committed on (the
    dead-letter replay group is left out: `avis_dlq_depth` reports it)."""
    admin = AIOKafkaAdminClient(**kafka.options(), request_timeout_ms=10000)
    consumer = AIOKafkaConsumer(**kafka.options(), group_id=None, enable_auto_commit=False)
    await admin.start()
    try:
        await consumer.start()
        listed = await admin.list_consumer_groups()
        groups = sorted({g[0] for g in listed if g[0].startswith(prefix) and g[0] != REPLAY_GROUP})
        committed = {g: await admin.list_consumer_group_offsets(g) for g in groups}
        partitions = sorted({tp for offsets in committed.values() for tp in offsets})
        ends = await consumer.end_offsets(partitions) if partitions else {}
        lags = []
        for group, offsets in committed.items():
            for tp, meta in offsets.items():
                done = max(meta.offset, 0)
                behind = max(0, ends.get(tp, done) - done)
                seconds = await _age(consumer, tp, done) if behind else 0.0
                lags.append(Lag(group, tp.topic, tp.partition, behind, seconds))
        return lags
    finally:
        await consumer.stop()
        await admin.close()


async def _age(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> float:
    """Seconds since the message at `offset` was written (0 if it cannot be read in time)."""
    consumer.assign([tp])
    consumer.seek(tp, offset)
    try:
        async with asyncio.timeout(5):
            record = await consumer.getone(tp)
    except TimeoutError:
        return 0.0
    return max(0.0, time.time() - float(record.timestamp) / 1000)


def publish(lags: Sequence[Lag]) -> None:
    """Set the gauges to `lags`, dropping the series of partitions no longer reported."""
    CONSUMER_LAG.clear()
    CONSUMER_LAG_SECONDS.clear()
    for lag in lags:
        labels = (lag.group, lag.topic, str(lag.partition))
        CONSUMER_LAG.labels(*labels).set(lag.behind)
        CONSUMER_LAG_SECONDS.labels(*labels).set(round(lag.seconds, 3))
    LAG_MEASURED.set(time.time())


async def store_answers(mongo_url: str) -> bool:
    """Whether the store answers a ping within two seconds."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        mongo_url, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000
    )
    try:
        await client.admin.command("ping")
        return True
    except Exception:
        return False
    finally:
        await client.close()


async def watch(kafka: KafkaAccess, mongo_url: str, every: float) -> None:
    """Measure every `every` seconds, forever; a failed measurement marks the broker down."""
    while True:
        try:
            async with asyncio.timeout(max(every, 20)):
                publish(await measure(kafka))
            DEPENDENCY_UP.labels("kafka").set(1)
        except Exception as exc:  # measured again next time; the gauge says the broker is away
            DEPENDENCY_UP.labels("kafka").set(0)
            log.warning("consumer lag not measured", error=type(exc).__name__)
        DEPENDENCY_UP.labels("store").set(1 if await store_answers(mongo_url) else 0)
        await asyncio.sleep(every)


def main() -> None:
    """Serve the lag and reachability metrics on HOST:PORT/metrics until stopped; connects to
    the broker as its administrator (AVIS_KAFKA_ADMIN_PASSWORD): it reads every group."""
    env = os.environ.get
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--bootstrap", default=env("AVIS_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--mongo-url", default=env("AVIS_MONGO_URL", "mongodb://127.0.0.1:27017"))
    parser.add_argument("--host", default=env("AVIS_LAG_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("AVIS_LAG_PORT", "8005")))
    parser.add_argument("--every", type=float, default=float(env("AVIS_LAG_SECONDS", "10")))
    args = parser.parse_args()
    start_http_server(args.port, addr=args.host)
    log.info("lag exporter serving", url=f"http://{args.host}:{args.port}/metrics")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch(KafkaAccess.admin(args.bootstrap), args.mongo_url, args.every))


if __name__ == "__main__":
    main()
