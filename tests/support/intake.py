"""The intake service on loopback over the real broker and store, and what its tests need
around it: tokens, and reading what intake publishes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from avis.intake.main import create_app
from avis.intake.service import IntakeService
from avis.intake.settings import Settings
from avis.intake.store import Store
from avis.shared import topics
from avis.shared.envelope import Event
from avis.shared.events import Payload
from avis.shared.runtime import Runtime
from avis.shared.security import Role, mint_token
from tests.support.basics import (
    MONGO_URL,
    eventually,
    make_settings,
    publish,
    serve,
    skip_history,
    unique,
)

CONSUMED = (topics.REVIEW_ASSIGNED, topics.REVIEW_COMPLETED, topics.REPORT_READY)
TEST_DOCUMENT_LIMIT = 256 * 1024


def intake_settings(**overrides: Any) -> Settings:
    """Intake settings on the test stack, with a database and consumer group of their own."""
    values = {"max_document_bytes": TEST_DOCUMENT_LIMIT, "public_url": "http://intake.test"}
    return make_settings(unique("intake"), Settings, **(values | overrides))


@dataclass
class Intake:
    """The intake service running on loopback, and handles on what it stands on."""

    url: str
    app: FastAPI
    settings: Settings
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def runtime(self) -> Runtime:
        """The service's runtime (its broker connection publishes test events too)."""
        runtime: Runtime = self.app.state.runtime
        return runtime

    @property
    def service(self) -> IntakeService:
        """The service layer."""
        service: IntakeService = self.app.state.intake
        return service

    @property
    def store(self) -> Store:
        """Intake's collections."""
        return self.service.store

    def token(self, sub: str, role: Role, partner_id: str | None = None) -> str:
        """A valid bearer token."""
        return mint_token(self.settings, sub, role, partner_id)

    def client(
        self, sub: str | None = None, role: Role = "patient", partner_id: str | None = None
    ) -> httpx.AsyncClient:
        """An HTTP client calling as `sub` (a fresh one if not given) in `role`."""
        headers = {}
        if role == "partner" and partner_id is None:
            partner_id = unique("partner")
        sub = sub or unique(role)
        headers["Authorization"] = f"Bearer {self.token(sub, role, partner_id)}"
        client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30.0)
        client.sub = sub  # type: ignore[attr-defined]
        self.clients.append(client)
        return client

    def anonymous(self) -> httpx.AsyncClient:
        """An HTTP client without credentials."""
        client = httpx.AsyncClient(base_url=self.url, timeout=30.0)
        self.clients.append(client)
        return client

    async def publish(self, payload: Payload, source: str = "/avis/review") -> Event:
        """Publish an event, as another service would, on its real topic."""
        event = Event.new(payload, source)
        await publish(self.runtime, event)
        return event

    async def consumed(self, event: Event, timeout: float = 30.0) -> None:
        """Wait until intake's consumer has stored its effect of `event`."""
        await eventually(lambda: self.runtime.messaging.processed(event), timeout=timeout)


@contextlib.asynccontextmanager
async def running_intake(settings: Settings | None = None) -> AsyncIterator[Intake]:
    """Intake served on loopback, connected to the broker and store; its database dropped after."""
    settings = settings or intake_settings()
    await skip_history(f"avis-{settings.service_name}", CONSUMED)
    app = create_app(settings)
    async with serve(app) as url:
        intake = Intake(url, app, settings)
        try:
            await eventually(
                lambda: intake.runtime.store_initialised and intake.runtime.kafka_started,
                timeout=60,
            )
            yield intake
        finally:
            for client in intake.clients:
                await client.aclose()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
    try:
        await mongo.drop_database(settings.database)
    finally:
        await mongo.close()
