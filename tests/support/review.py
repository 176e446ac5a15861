"""The review app served on loopback over the real broker and store, and what tests need
around it: tokens, a publisher of intake's events, and a log of what review published."""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from opentelemetry import trace
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from avis.review.main import create_app
from avis.review.service import ReviewService
from avis.review.settings import Settings
from avis.shared.envelope import Event, new_event_id
from avis.shared.events import (
    CaseClaimed,
    CaseSubmitted,
    CaseWithdrawn,
    Language,
    Question,
    Specialty,
    Urgency,
)
from avis.shared.mongo import Document
from avis.shared.runtime import Runtime
from avis.shared.sealing import Keyring
from avis.shared.security import Role, mint_token
from avis.shared.topics import CASE_SUBMITTED, REPORT_READY, REVIEW_ASSIGNED, REVIEW_COMPLETED
from tests.support.basics import (
    MONGO_URL,
    SEALING_KEYS,
    consumed,
    eventually,
    make_settings,
    publish,
    serve,
    skip_history,
    unique,
)
from tests.support.topics import TopicReader


def review_settings(**overrides: Any) -> Settings:
    """Review settings on the test stack, with a service name, group and database of its own."""
    values = {"overdue_refresh_seconds": 0.5} | overrides
    return make_settings(unique("review"), Settings, **values)


def bearer_client(settings: Settings, url: str, sub: str, role: Role) -> httpx.AsyncClient:
    """An HTTP client of a service at `url`, calling as `sub` in `role` with a token minted
    under `settings` (every service of the test stack verifies the same development key)."""
    token = mint_token(settings, sub, role)
    return httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
    )


@dataclass
class ReviewStack:
    """The review app on loopback, its database, and the test's view of the broker."""

    url: str
    settings: Settings
    db: AsyncDatabase[Document]
    log: TopicReader
    publisher: Runtime
    review: ReviewService
    keyring: Keyring = field(default_factory=lambda: Keyring.parse(SEALING_KEYS))

    def token(self, sub: str, role: Role) -> str:
        """A valid token for `sub` in `role`."""
        return mint_token(self.settings, sub, role)

    def client(self, sub: str = "coord-1", role: Role = "coordinator") -> httpx.AsyncClient:
        """An HTTP client of the app, authenticated as `sub` in `role`."""
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token(sub, role)}"},
            timeout=30.0,
        )

    async def add_reviewer(
        self,
        rid: str,
        specialties: list[str],
        languages: list[str],
        institution: str | None = None,
        capacity: int = 3,
        **extra: Any,
    ) -> dict[str, Any]:
        """Add a reviewer through the API as a coordinator."""
        body = {
            "id": rid,
            "display_name": f"Reviewer {rid}",
            "specialties": specialties,
            "languages": languages,
            "institution_code": institution,
            "capacity": capacity,
            **extra,
        }
        async with self.client() as http:
            response = await http.post("/v1/reviewers", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def case_event(
        self,
        specialty: str,
        language: str = "fr",
        urgency: str = "routine",
        institution: str | None = None,
        case_id: str | None = None,
        patient_id: str | None = None,
        key_ref: str | None = None,
        international_review: bool = False,
    ) -> Event:
        """An `avis.case.submitted.v1` as intake would publish it, in a trace of its own (filed
        by `patient_id`, or, without one, by a partner; with `key_ref`, the case's key in the
        key server; `international_review`: the patient accepted a specialist who does not read
        their language)."""
        case_id = case_id or unique("case")
        event_id = new_event_id()
        contact = self.keyring.seal_json(
            {"given_name": "Camille", "email": "camille@example.org", "language": language},
            aad=event_id,
        )
        payload = CaseSubmitted(
            case_id=case_id,
            reference=f"AV-TEST-{case_id[-6:]}",
            specialty=Specialty(specialty),
            urgency=Urgency(urgency),
            language=Language(language),
            questions=[Question.DIAGNOSIS_CLARIFICATION],
            physician_institution=institution,
            document_count=2,
            submitted_at=datetime.now(UTC),
            case_url=f"http://127.0.0.1:8001/v1/cases/{case_id}",
            contact=contact,
            patient_id=patient_id,
            key_ref=key_ref,
            international_review=international_review,
        )
        with trace.get_tracer("tests").start_as_current_span("intake.submit"):
            return Event.new(payload, "/avis/intake", event_id=event_id)

    async def submit(self, specialty: str, **kwargs: Any) -> str:
        """Publish a submitted case on the real `case-submitted` topic; returns its id."""
        event = self.case_event(specialty, **kwargs)
        await publish(self.publisher, event)
        return event.subject

    async def consumed(self, event: Event, timeout: float = 30.0) -> None:
        """Wait until review has stored its effect of `event`."""
        await consumed(self.settings, self.publisher.broker, self.db, event, timeout=timeout)

    async def claim(self, case_id: str, patient_id: str) -> Event:
        """Publish the claim of a partner-filed case by its patient; returns the event."""
        payload = CaseClaimed(case_id=case_id, patient_id=patient_id, claimed_at=datetime.now(UTC))
        event = Event.new(payload, "/avis/intake")
        await publish(self.publisher, event)
        return event

    async def withdraw(self, case_id: str) -> None:
        """Publish the case's withdrawal."""
        payload = CaseWithdrawn(case_id=case_id, withdrawn_at=datetime.now(UTC))
        await publish(self.publisher, Event.new(payload, "/avis/intake"))

    async def assignment(self, case_id: str, round_: int | None = None) -> dict[str, Any]:
        """The case's assignment (latest round, or the one asked), read as a coordinator."""
        async with self.client() as http:
            response = await http.get("/v1/assignments", params={"case_id": case_id})
        assert response.status_code == 200, response.text
        items = sorted(response.json()["items"], key=lambda a: a["round"])
        assert items, f"no assignment for {case_id}"
        return dict(items[-1] if round_ is None else items[round_ - 1])

    async def queued(self) -> list[str]:
        """The ids of the cases waiting in the queue."""
        async with self.client() as http:
            response = await http.get("/v1/queue", params={"limit": 100})
        assert response.status_code == 200, response.text
        return [c["case_id"] for c in response.json()["items"]]

    async def case_status(self, case_id: str) -> str | None:
        """The case's matching status in review's store."""
        doc = await self.db["cases"].find_one({"_id": case_id}, {"status": 1})
        return None if doc is None else str(doc["status"])


@contextlib.asynccontextmanager
async def running_review(settings: Settings | None = None) -> AsyncIterator[ReviewStack]:
    """Review served on loopback over the broker and store; its database dropped after."""
    settings = settings or review_settings()
    await skip_history(f"avis-{settings.service_name}", [CASE_SUBMITTED, REPORT_READY])
    log = await TopicReader(REVIEW_ASSIGNED, REVIEW_COMPLETED).mark()
    publisher = Runtime(make_settings())
    await publisher.start()
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(MONGO_URL, tz_aware=True)
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    try:
        async with serve(app) as url:
            await eventually(lambda: publisher.kafka_started and runtime.kafka_started, timeout=60)
            db = mongo[settings.database]
            yield ReviewStack(url, settings, db, log, publisher, app.state.review)
    finally:
        await publisher.stop()
        await mongo.drop_database(settings.database)
        await mongo.close()
