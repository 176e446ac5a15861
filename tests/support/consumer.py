"""A consuming service in this process (its effect counts how often it ran per event), a
started runtime, and a valid event routed to a test's own topic: the delivery and outage tests'
pieces."""

import dataclasses
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY

from avis.shared.envelope import Event
from avis.shared.events import CaseWithdrawn
from avis.shared.runtime import Runtime
from avis.shared.settings import CommonSettings
from tests.support.basics import eventually, make_settings, unique


def withdrawn(topic: str, case_id: str | None = None) -> Event:
    """A valid event routed to this test's own topic."""
    payload = CaseWithdrawn(case_id=case_id or unique("case"), withdrawn_at=datetime.now(UTC))
    return dataclasses.replace(Event.new(payload, "/avis/test"), topic=topic)


class Consumer:
    """A consuming service in this process whose effect counts how often it ran per event."""

    def __init__(self, topic: str, **overrides: Any) -> None:
        self.runtime = Runtime(make_settings(**overrides))
        self.effects = self.runtime.db["effects"]
        self.broken = False
        self.runtime.subscribe(topic, self.handle)

    async def handle(self, event: Event, payload: Any) -> None:
        if self.broken:
            raise RuntimeError("handler is broken for this test")
        # Deliberately not idempotent on its own: a double run would show as n == 2.
        await self.effects.update_one({"_id": event.id}, {"$inc": {"n": 1}}, upsert=True)

    def outcomes(self, topic: str, ce_type: str, outcome: str) -> float:
        """How many events of a type this consumer has applied, or skipped as duplicates."""
        labels = {"service": self.runtime.service, "topic": topic, "type": ce_type}
        return (
            REGISTRY.get_sample_value("avis_events_consumed_total", labels | {"outcome": outcome})
            or 0
        )

    async def count(self, event_id: str) -> int:
        doc = await self.effects.find_one({"_id": event_id})
        return int(doc["n"]) if doc else 0

    async def __aenter__(self) -> "Consumer":
        await self.runtime.start()
        await eventually(lambda: self.runtime.kafka_started)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runtime.stop()


async def started(settings: CommonSettings) -> Runtime:
    """A runtime of `settings`, started and connected to the broker."""
    runtime = Runtime(settings)
    await runtime.start()
    await eventually(lambda: runtime.kafka_started)
    return runtime
