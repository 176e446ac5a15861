"""SIGTERM to a real service process (tests/integration/shared/shutdown_service.py, built like the
four with `Runtime` and `runtime.serve`) on the real broker and store: a request and an event
handler in flight finish and the offset is committed; a handler longer than the grace is left
unfinished, its offset uncommitted, and the next process applies the event once. Either way the
process exits within its bound (the grace for requests, then the grace for handlers)."""

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo import AsyncMongoClient

from avis.shared.envelope import Event
from avis.shared.events import CaseWithdrawn
from avis.shared.runtime import Runtime
from tests.support.basics import (
    BOOTSTRAP,
    JWT_SECRET,
    KAFKA,
    MONGO_URL,
    ROOT,
    SEALING_KEYS,
    eventually,
    make_settings,
    publish,
    unique,
)
from tests.support.kms import kms_env
from tests.support.topics import TopicReader, header

pytestmark = pytest.mark.infra

GRACE = 3  # seconds, for requests and then for handlers
EXIT_BOUND = 2 * GRACE + 30  # both graces, and room for a loaded machine to stop the clients
# uvicorn raises the signal it caught again once its shutdown is done: -SIGTERM after a clean stop
STOPPED = (0, -signal.SIGTERM)


@dataclasses.dataclass
class Process:
    proc: "subprocess.Popen[bytes]"
    url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def service(
    name: str, topic: str, handler_seconds: float, tmp: Path, request_seconds: float = GRACE - 1
) -> Iterator[Process]:
    port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SERVICE_NAME": name,
        "HTTP_PORT": str(port),
        "MONGO_DATABASE": f"test_{name}".replace("-", "_"),
        "AVIS_KAFKA_BOOTSTRAP": BOOTSTRAP,
        # a service of the test's own (plain CommonSettings): the broker's administrator
        "KAFKA_USERNAME": KAFKA.username,
        "KAFKA_PASSWORD": KAFKA.password,
        "AVIS_MONGO_URL": MONGO_URL,
        "AVIS_SEALING_KEYS": SEALING_KEYS,
        **kms_env(),
        "AVIS_JWT_SECRET": JWT_SECRET,
        "AVIS_ENV": "development",  # HS256 tokens
        "AVIS_LOG_FORMAT": "json",
        "AVIS_RETRY_BACKOFF_MAX_SECONDS": "1",
        "AVIS_SHUTDOWN_GRACE_SECONDS": str(GRACE),
        "SHUTDOWN_TOPIC": topic,
        "SHUTDOWN_HANDLER_SECONDS": str(handler_seconds),
        "SHUTDOWN_REQUEST_SECONDS": str(request_seconds),
    }
    log = tmp / f"{name}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.shared.shutdown_service"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        yield Process(proc, f"http://127.0.0.1:{port}", log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def ready(process: Process) -> None:
    async def answers() -> bool:
        async with httpx.AsyncClient(timeout=5) as http:
            with contextlib.suppress(httpx.HTTPError):
                return (await http.get(f"{process.url}/readyz")).status_code == 200
        return False

    await eventually(answers, timeout=90, interval=0.5)


async def exited(process: Process) -> int:
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.run_in_executor(None, process.proc.wait), EXIT_BOUND)
    except TimeoutError:
        tail = process.log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"still running {EXIT_BOUND}s after SIGTERM:\n{tail}") from None


async def committed(group: str, topic: str, partition: int) -> int | None:
    consumer = AIOKafkaConsumer(**KAFKA.options(), group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, partition))
    finally:
        await consumer.stop()


async def effect(db: Any, kind: str, event: Event) -> int:
    doc = await db["effects"].find_one({"_id": f"{kind}:{event.id}"})
    return int(doc["n"]) if doc else 0


async def in_flight(db: Any) -> bool:
    """Whether the service has started answering `GET /v1/slow` (it notes that first)."""
    return await db["effects"].find_one({"_id": "slow:started"}) is not None


async def publish_one(topic: str) -> tuple[Event, int]:
    """A valid event on the test's topic; returns it and the partition it went to."""
    payload = CaseWithdrawn(case_id=unique("case"), withdrawn_at=datetime.now(UTC))
    event = dataclasses.replace(Event.new(payload, "/avis/test"), topic=topic)
    publisher = Runtime(make_settings())
    await publisher.start()
    try:
        await eventually(lambda: publisher.kafka_started, timeout=60)
        await publish(publisher, event)
    finally:
        await publisher.stop()
    tail = await TopicReader(topic).mark(from_beginning=True)
    (record,) = await tail.records_for(event.subject)
    assert header(record, "ce_id") == event.id
    return event, record.partition


@pytest.fixture
async def db_for() -> Any:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
    names: list[str] = []

    def db(name: str) -> Any:
        names.append(f"test_{name}".replace("-", "_"))
        return mongo[names[-1]]

    yield db
    for name in names:
        await mongo.drop_database(name)
    await mongo.close()


async def test_sigterm_lets_the_request_and_the_handler_in_flight_finish(
    topic: str, tmp_path: Path, db_for: Any
) -> None:
    name = unique("shutdown")
    db = db_for(name)
    with service(name, topic, handler_seconds=GRACE - 1, tmp=tmp_path) as process:
        await ready(process)
        event, partition = await publish_one(topic)
        await eventually(lambda: effect(db, "started", event), timeout=60)
        async with httpx.AsyncClient(timeout=60) as http:
            request = asyncio.create_task(http.get(f"{process.url}/v1/slow"))
            await eventually(lambda: in_flight(db), timeout=60)
            process.proc.send_signal(signal.SIGTERM)
            answer = await request
        assert answer.status_code == 200 and answer.json() == {"status": "finished"}
        assert await exited(process) in STOPPED
    assert await effect(db, "done", event) == 1, "the handler in flight finished"
    offset = await committed(f"avis-{name}", topic, partition)
    assert offset is not None and offset >= 1, "its offset was committed after its effect"


async def test_sigterm_leaves_an_unfinished_handler_uncommitted_and_it_is_applied_once_later(
    topic: str, tmp_path: Path, db_for: Any
) -> None:
    name = unique("shutdown")
    db = db_for(name)
    with service(name, topic, handler_seconds=600, tmp=tmp_path) as process:
        await ready(process)
        event, partition = await publish_one(topic)
        await eventually(lambda: effect(db, "started", event), timeout=60)
        process.proc.send_signal(signal.SIGTERM)
        await exited(process)  # within the bound, though the handler would take 10 minutes
    assert await effect(db, "done", event) == 0
    assert await committed(f"avis-{name}", topic, partition) in (None, 0), "nothing committed"

    # The next process of the same service gets the event again and applies it, once.
    with service(name, topic, handler_seconds=0, tmp=tmp_path) as process:
        await ready(process)
        await eventually(lambda: effect(db, "done", event), timeout=60)
        process.proc.send_signal(signal.SIGTERM)
        assert await exited(process) in STOPPED
    assert await effect(db, "done", event) == 1
    assert await committed(f"avis-{name}", topic, partition) == 1


async def test_sigterm_does_not_wait_forever_for_a_request_that_never_ends(
    topic: str, tmp_path: Path, db_for: Any
) -> None:
    name = unique("shutdown")
    db = db_for(name)
    with service(name, topic, 0, tmp_path, request_seconds=600) as process:
        await ready(process)
        async with httpx.AsyncClient(timeout=EXIT_BOUND + 30) as http:
            request = asyncio.create_task(http.get(f"{process.url}/v1/slow"))
            await eventually(lambda: in_flight(db), timeout=60)
            process.proc.send_signal(signal.SIGTERM)
            assert await exited(process) in STOPPED
            with contextlib.suppress(httpx.HTTPError):
                answer = await request
                assert answer.status_code >= 500, "cut off, never answered as if done"
