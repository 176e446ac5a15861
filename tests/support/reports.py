"""The reports app served on loopback over the real broker and store, and what its tests need:
events as intake and review publish them (with their sealed parts, under the case's own key in
the test stack's key server when the case has one), tokens, and a log of what reports
publishes."""

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from opentelemetry import trace
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from avis.reports.main import create_app
from avis.reports.service import ReportsService
from avis.reports.settings import Settings
from avis.shared.case_keys import CaseKeys
from avis.shared.envelope import Event, new_event_id
from avis.shared.events import (
    CaseSubmitted,
    CaseWithdrawn,
    CompletedOpinion,
    ConsentScope,
    Language,
    PatientContact,
    Question,
    ReviewCompleted,
    Specialty,
    Urgency,
)
from avis.shared.kafka import Messaging
from avis.shared.keys import KmipKeyService
from avis.shared.mongo import Document
from avis.shared.runtime import Runtime
from avis.shared.sealing import Keyring
from avis.shared.security import Role, mint_token
from avis.shared.topics import CASE_SUBMITTED, REPORT_READY, REVIEW_COMPLETED
from tests.support import kms
from tests.support.basics import (
    MONGO_URL,
    SEALING_KEYS,
    eventually,
    make_settings,
    publish,
    serve,
    skip_history,
    unique,
)
from tests.support.samples import OPINIONS
from tests.support.topics import TopicReader

CONSUMED = (CASE_SUBMITTED, REVIEW_COMPLETED)


def reports_settings(**overrides: Any) -> Settings:
    """Reports settings on the test stack, with a service name, group and database of its own."""
    values = {"public_url": "http://reports.test"} | overrides
    return make_settings(unique("reports"), Settings, **values)


@dataclass
class Case:
    """A case as the tests file it: its ids and who filed it."""

    case_id: str
    language: Language
    patient_id: str | None
    partner_id: str | None
    scopes: list[ConsentScope]
    reviewer_id: str
    contact: PatientContact
    opinion: dict[str, Any]
    # The case's key in the key server and intake's ring led by it (None: the service keyring).
    key_ref: str | None = None
    ring: Keyring | None = None


@dataclass
class ReportsStack:
    """The reports app on loopback, its database, and the test's view of the broker."""

    url: str
    settings: Settings
    db: AsyncDatabase[Document]
    log: TopicReader
    publisher: Runtime
    reports: ReportsService
    keyring: Keyring = field(default_factory=lambda: Keyring.parse(SEALING_KEYS))
    # The case keys as intake makes and destroys them, with its own certificate.
    keys: CaseKeys = field(
        default_factory=lambda: CaseKeys(
            Keyring.parse(SEALING_KEYS), KmipKeyService(kms.endpoint("intake"))
        )
    )

    def token(self, sub: str, role: Role, partner_id: str | None = None) -> str:
        """A valid token."""
        return mint_token(self.settings, sub, role, partner_id)

    def client(
        self, sub: str, role: Role, partner_id: str | None = None, **headers: str
    ) -> httpx.AsyncClient:
        """An HTTP client of the app, authenticated as `sub` in `role`."""
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token(sub, role, partner_id)}", **headers},
            timeout=30.0,
        )

    def new_case(
        self,
        language: Language = Language.FR,
        *,
        by_partner: bool = False,
        share: bool = True,
        given_name: str = "Camille",
        family_name: str = "Martin",
    ) -> Case:
        """A case not yet published."""
        scopes = [ConsentScope.REVIEW] + ([ConsentScope.SHARE_WITH_PARTNER] if share else [])
        return Case(
            case_id=str(uuid.uuid4()),
            language=language,
            patient_id=None if by_partner else unique("patient"),
            partner_id=unique("partner"),  # travels in the event only with consent to share
            scopes=scopes,
            reviewer_id=unique("rev"),
            contact=PatientContact(
                given_name=given_name,
                family_name=family_name,
                email="patient@example.org",
                birth_date=date(1971, 3, 14),
                preferred_language=language,
            ),
            opinion=dict(OPINIONS[language]),
        )

    async def keyed(self, case: Case) -> Case:
        """Give the case a key of its own in the key server, as intake does when filing it."""
        case.key_ref = await self.keys.create(case.case_id)
        case.ring = await self.keys.ring(case.key_ref)
        return case

    def erased(self, case: Case) -> Event:
        """`avis.case.erased.v1`, as intake publishes it once it destroyed the case's key."""
        return kms.erased_event(case.case_id, case.key_ref)

    def submitted(self, case: Case) -> Event:
        """`avis.case.submitted.v1` as intake publishes it, the contact sealed, in a trace."""
        event_id = new_event_id()
        share = ConsentScope.SHARE_WITH_PARTNER in case.scopes
        payload = CaseSubmitted(
            case_id=case.case_id,
            reference=f"AV-2026-{int(case.case_id[-6:], 16) % 1_000_000:06d}",
            specialty=Specialty.ONCOLOGY,
            urgency=Urgency.ROUTINE,
            language=case.language,
            questions=[Question.DIAGNOSIS_CLARIFICATION, Question.FURTHER_TESTS],
            partner_id=case.partner_id if share else None,
            patient_id=case.patient_id,
            consent_scopes=case.scopes,
            document_count=1,
            submitted_at=datetime.now(UTC) - timedelta(days=5),
            case_url=f"http://intake.test/v1/cases/{case.case_id}",
            contact=(case.ring or self.keyring).seal_json(case.contact, aad=event_id),
            key_ref=case.key_ref,
        )
        with trace.get_tracer("tests").start_as_current_span("intake.submit"):
            return Event.new(payload, "/avis/intake", event_id=event_id)

    def completed(self, case: Case, version: int = 1, *, seq: int = 0, **changes: Any) -> Event:
        """`avis.review.completed.v1` as review publishes it (the case's sequence number `seq`),
        the opinion sealed."""
        event_id = new_event_id()
        content = CompletedOpinion.model_validate(
            {
                **case.opinion,
                **changes,
                "version": version,
                "reviewer_display_name": "Dr Claire Fontaine",
                "reviewer_specialty": "oncology",
            }
        )
        payload = ReviewCompleted(
            case_id=case.case_id,
            assignment_id=f"{case.case_id}-0001",
            reviewer_id=case.reviewer_id,
            specialty=Specialty.ONCOLOGY,
            version=version,
            completed_at=datetime.now(UTC),
            opinion=(case.ring or self.keyring).seal_json(content, aad=event_id),
            seq=seq,
        )
        return Event.new(payload, "/avis/review", event_id=event_id)

    def withdrawn(self, case: Case) -> Event:
        """`avis.case.withdrawn.v1`."""
        return Event.new(
            CaseWithdrawn(case_id=case.case_id, withdrawn_at=datetime.now(UTC)), "/avis/intake"
        )

    async def publish(self, *events: Event) -> None:
        """Publish events on their real topics, in order."""
        for event in events:
            await publish(self.publisher, event)

    async def consumed(self, event: Event, timeout: float = 30.0) -> None:
        """Wait until reports has stored its effect of `event`."""
        # The same consumer group reads the same inbox from this client.
        messaging = Messaging(self.settings, self.publisher.broker, self.db)
        await eventually(lambda: messaging.processed(event), timeout=timeout)

    async def ready(self, case: Case, count: int = 1) -> list[dict[str, Any]]:
        """The `report-ready` payloads of a case, once `count` of them were published."""
        return await self.log.wait(case.case_id, "avis.report.ready.v1", count)

    def patient(self, case: Case) -> httpx.AsyncClient:
        """The patient who filed the case."""
        assert case.patient_id is not None
        return self.client(case.patient_id, "patient")


@contextlib.asynccontextmanager
async def running_reports(settings: Settings | None = None) -> AsyncIterator[ReportsStack]:
    """Reports served on loopback over the broker and store; its database dropped after."""
    settings = settings or reports_settings()
    await skip_history(f"avis-{settings.service_name}", CONSUMED)
    log = await TopicReader(REPORT_READY).mark()
    publisher = Runtime(make_settings())
    await publisher.start()
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(MONGO_URL, tz_aware=True)
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    try:
        async with serve(app) as url:
            await eventually(lambda: publisher.kafka_started and runtime.kafka_started, timeout=60)
            yield ReportsStack(
                url, settings, mongo[settings.database], log, publisher, app.state.reports
            )
    finally:
        await publisher.stop()
        await mongo.drop_database(settings.database)
        await mongo.close()
