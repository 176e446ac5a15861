"""One trace per case: the HTTP request, the outbox entry, the relay's publish and the consumer."""

import dataclasses
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from avis.shared.envelope import Event
from avis.shared.events import CaseWithdrawn
from avis.shared.observability import trace_id_of
from avis.shared.outbox import new_with_events
from avis.shared.runtime import Runtime
from tests.support.basics import eventually, make_settings, serve, unique

pytestmark = pytest.mark.infra


async def test_one_trace_from_http_request_to_consumer(topic: str) -> None:
    exporter = InMemorySpanExporter()
    producer = Runtime(make_settings())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    aggregates = producer.db["aggregates"]
    producer.relay.watch(aggregates)
    router = APIRouter()

    @router.post("/things")
    async def create() -> dict[str, str]:
        payload = CaseWithdrawn(case_id=unique("case"), withdrawn_at=datetime.now(UTC))
        event = dataclasses.replace(Event.new(payload, "/avis/test"), topic=topic)
        async with producer.relay.publishing(aggregates, payload.case_id):
            await aggregates.insert_one(new_with_events({"_id": payload.case_id}, [event]))
        return {"event_id": event.id, "traceparent": event.traceparent}

    seen: dict[str, str] = {}
    consumer = Runtime(make_settings())

    async def handle(event: Event, payload: Any) -> None:
        ctx = trace.get_current_span().get_span_context()
        seen[event.id] = format(ctx.trace_id, "032x")

    consumer.subscribe(topic, handle)
    await consumer.start()
    try:
        async with serve(producer.create_app("t", [router])) as url:
            async with httpx.AsyncClient(base_url=url) as http:
                response = await http.post("/things")
            assert response.status_code == 200
            event_id = response.json()["event_id"]
            kept_traceparent = response.json()["traceparent"]
            await eventually(lambda: seen.get(event_id), timeout=60)
    finally:
        await consumer.stop()

    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.kind == trace.SpanKind.SERVER and "/things" in s.name]
    assert server, [s.name for s in spans]
    trace_id = format(server[0].context.trace_id, "032x")
    assert trace_id_of(kept_traceparent) == trace_id, "the outbox keeps the request's trace"
    publish = [s for s in spans if s.kind == trace.SpanKind.PRODUCER and topic in s.name]
    process = [s for s in spans if s.kind == trace.SpanKind.CONSUMER and topic in s.name]
    assert publish and process, [s.name for s in spans]
    assert {format(s.context.trace_id, "032x") for s in publish + process} == {trace_id}
    assert seen[event_id] == trace_id, "the handler runs inside the case's trace"
