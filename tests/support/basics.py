"""The test stack's addresses (the broker and store `make test` starts; deploy/local/test.sh
passes them in the environment) and the small helpers every test uses: unique names, settings of
an in-process service, skipping a topic's history, polling, serving an app on loopback,
publishing."""

import asyncio
import contextlib
import functools
import os
import pathlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from pymongo.asynchronous.database import AsyncDatabase

from avis.shared.envelope import Event
from avis.shared.kafka import Messaging, partitions_of
from avis.shared.kafka_access import KafkaAccess
from avis.shared.mongo import Document
from avis.shared.sealing import generate_key
from avis.shared.settings import CommonSettings

# The suite runs the services as `make run` does, in development: the HS256 test secret is
# accepted only there. A test of production says so in its own settings.
os.environ.setdefault("AVIS_ENV", "development")
ROOT = pathlib.Path(__file__).resolve().parents[2]
BOOTSTRAP = os.environ.get("AVIS_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
MONGO_URL = os.environ.get("AVIS_MONGO_URL", "mongodb://127.0.0.1:27117")
# The tests' own clients, and the services they run in process, connect as the broker's
# administrator; the services they start as processes, as themselves. infra.sh makes the
# passwords when it formats the broker and deploy/local/test.sh exports them.
KAFKA = KafkaAccess.admin(BOOTSTRAP)
JWT_SECRET = "test-secret-" + "x" * 40
SEALING_KEYS = f"k1:{generate_key()}"


def kafka_passwords() -> dict[str, str]:
    """The broker's passwords (AVIS_KAFKA_ADMIN_PASSWORD, AVIS_<SERVICE>_KAFKA_PASSWORD), for a
    service process started with an environment of its own."""
    return {
        k: v
        for k, v in os.environ.items()
        if k.startswith("AVIS_") and k.endswith("KAFKA_PASSWORD")
    }


def infra(action: str, service: str) -> None:
    """Start, stop or wait for one piece of the test stack (the same script `make test` uses)."""
    subprocess.run([str(ROOT / "deploy/local/infra.sh"), action, service], check=True, cwd=ROOT)


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


SettingsT = TypeVar("SettingsT", bound=CommonSettings)


def make_settings(
    service: str = "",
    cls: type[SettingsT] = CommonSettings,  # type: ignore[assignment]
    **overrides: Any,
) -> SettingsT:
    """Settings for an in-process service on the test stack, with a database of its own."""
    name = service or unique("t")
    values: dict[str, Any] = {
        "service_name": name,
        "mongo_database": f"test_{name}".replace("-", "_"),
        "kafka_bootstrap": BOOTSTRAP,
        "kafka_username": KAFKA.username,
        "kafka_password": KAFKA.password,
        "mongo_url": MONGO_URL,
        "sealing_keys": SEALING_KEYS,
        "jwt_secret": JWT_SECRET,
        "relay_poll_seconds": 0.2,
        "audit_anchor_seconds": 0.5,
        "retry_backoff_max_seconds": 1.0,
        "consumer_max_attempts": 3,
        "log_format": "json",
    }
    values.update(overrides)
    return cls(**values)


async def skip_history(group_id: str, topics: Sequence[str]) -> None:
    """Commit `group_id`'s offsets at the end of each topic.

    The platform's topics are shared by every test; a fresh group would otherwise start by
    consuming all their history. Starting at the end, it sees what this test publishes.
    """
    # A broker just started may refuse the first commits of a group while its group
    # coordinator loads (UnknownMemberId, CommitFailed): try again, a few times.
    for attempt in range(10):
        consumer = AIOKafkaConsumer(**KAFKA.options(), group_id=group_id, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in topics for p in await partitions_of(KAFKA, t)]
            consumer.assign(tps)
            await consumer.commit(dict(await consumer.end_offsets(tps)))
            return
        except KafkaError:
            if attempt == 9:
                raise
        finally:
            await consumer.stop()
        await asyncio.sleep(1.0)


async def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll `check` (sync or async) until it returns something truthy, or fail at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


async def consumed(
    settings: CommonSettings,
    broker: KafkaBroker,
    db: AsyncDatabase[Document],
    *events: Event,
    timeout: float = 30.0,
) -> None:
    """Wait until the service of `settings` has stored its effect of each of `events` (its
    inbox marker, read from its own database: the same consumer group reads the same inbox)."""
    messaging = Messaging(settings, broker, db)
    for event in events:
        await eventually(functools.partial(messaging.processed, event), timeout=timeout)


@contextlib.asynccontextmanager
async def serve(app: Any, port: int = 0) -> AsyncIterator[str]:
    """Serve an ASGI app (lifespan included) on a loopback port (0: a free one); yields its base
    URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def publish(runtime: Any, event: Any) -> None:
    """Publish `event` straight to the broker, as another service's relay would, and wait for
    its acknowledgement (services themselves publish only through their outbox)."""
    await (await runtime.messaging.send(event))
