"""A consumer and a service survive the store or the broker going away and coming back."""

import asyncio

import httpx
import pytest
from fastapi import APIRouter

from avis.shared.runtime import Runtime
from avis.shared.settings import CommonSettings
from tests.support.basics import eventually, infra, make_settings, publish, serve
from tests.support.consumer import Consumer, started, withdrawn
from tests.support.topics import read_topic

pytestmark = pytest.mark.infra


async def test_consumer_survives_store_outage_without_dead_letters(
    settings: CommonSettings, topic: str
) -> None:
    producer = await started(settings)
    try:
        async with Consumer(topic) as consumer:
            warmup = withdrawn(topic)
            await publish(producer, warmup)
            await eventually(lambda: consumer.count(warmup.id))

            infra("stop", "ferretdb")
            try:
                during = withdrawn(topic)
                await publish(producer, during)  # Kafka is up: the event waits there
                checks = await consumer.runtime.readiness()
                assert checks["store"] != "ok", checks
                await asyncio.sleep(4)  # several failed attempts while the store is away
            finally:
                infra("start", "ferretdb")
                infra("wait", "ferretdb")
            await eventually(lambda: consumer.count(during.id), timeout=60)
            assert await consumer.count(during.id) == 1
            assert (await consumer.runtime.readiness())["store"] == "ok"
        assert await read_topic(f"{topic}.dlq", expect=0, timeout=2) == []
    finally:
        await producer.stop()


async def test_service_reports_not_ready_while_kafka_is_unreachable() -> None:
    # A bootstrap address where nothing listens: the service starts, says why it is not ready,
    # and keeps retrying instead of crashing.
    runtime = Runtime(make_settings(kafka_bootstrap="127.0.0.1:1"))
    app = runtime.create_app("t")
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/healthz")).status_code == 200
        response = await http.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "kafka" in response.json()["detail"]


async def test_service_recovers_when_kafka_comes_back(topic: str) -> None:
    infra("stop", "kafka")
    try:
        runtime = Runtime(make_settings())
        app = runtime.create_app("t")
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            await asyncio.sleep(2)
            assert (await http.get("/readyz")).status_code == 503
            infra("start", "kafka")
            infra("wait", "kafka")
            await eventually(lambda: _ready(http), timeout=90, interval=1.0)
    finally:
        infra("start", "kafka")
        infra("wait", "kafka")


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def test_request_meeting_the_store_away_gets_a_503_problem(settings: CommonSettings) -> None:
    runtime = Runtime(settings)
    router = APIRouter()

    @router.get("/v1/things/{thing_id}")
    async def read(thing_id: str) -> dict[str, str]:
        doc = await runtime.db["things"].find_one({"_id": thing_id})
        return {"found": str(doc is not None)}

    async with (
        serve(runtime.create_app("t", [router])) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        assert (await http.get("/v1/things/a")).json() == {"found": "False"}
        infra("stop", "ferretdb")
        try:
            response = await http.get("/v1/things/a", timeout=30)
        finally:
            infra("start", "ferretdb")
            infra("wait", "ferretdb")
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["retry-after"] == "5"
        await eventually(lambda: _found(http), timeout=60, interval=1.0)


async def _found(http: httpx.AsyncClient) -> bool:
    return (await http.get("/v1/things/a")).status_code == 200
