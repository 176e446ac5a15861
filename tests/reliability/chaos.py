"""The fault run: the whole journey under load while things really break, then an audit.

Cases are filed (by two partners, each subscribed to webhooks, and by patients), a driver plays
the reviewers (some decline, most answer, a few correct their opinion), emails flow through the
SMTP sink. A seeded share of the cases takes the later paths of the care pathway (mixes.py: a
request for more information, answered or left to expire; follow-up questions after the
report; a second reading, with comments for some; an international review, translated both
ways by a translator; an international review read twice, the opinion read in English by a
second reader before it is translated back; the treating physician's copy of the report, by
email or posted to their institution's FHIR endpoint), driven and audited by their own rows.
Meanwhile, on a seeded schedule, each service is SIGKILLed several times (at random moments,
right after its relay published, right after notify sent), the broker and the store are each
stopped once and started again, the SMTP sink fails for a while and so do one partner's
endpoint and the physicians' institution's FHIR endpoint (the run serves it; it refuses a post
and its retry at least). The run's notify disables no endpoint after failures in a row (its
threshold, the partners' too, is 0), yet the run re-enables the FHIR endpoint after its spell
as a coordinator would, and the audit wants it enabled with no post waiting. A supervisor
restarts what was killed. Then the run waits for quiet and audits what DESIGN.md section 3
promises, counting the effects themselves:

- every case reaches `report_ready`, with one report version per opinion version and one per
  answered follow-up question (with its addendum);
- one email per notification of the matrix (the professionals' `pro_*` too), by distinct
  Message-ID;
- one successful signed delivery per event per partner, by distinct `webhook-id`; one valid
  FHIR document posted per physician's copy, under its send's `webhook-id` and no other; a
  repeated email, delivery or post keeps its id and is counted in the figures
  (`repeated_emails`, `repeated_webhooks`, `repeated_fhir`);
- one effect per event id in each consumer: intake's timeline entries, reports' versions,
  review's rounds, requests, follow-ups, readings and translations (and the translator's load
  released), notify's queued sends and deliveries, and one physician's copy told per report
  version told; the report of a translated opinion states its translation (and, read twice,
  names both readers);
- no reviewer ever over capacity (sampled during the run, and from the rounds' times after);
- nothing in any `<topic>.dlq`.

`run(plan)` returns the figures and the problems found; `python -m tests.reliability.chaos`
(`make chaos`) runs the full size against the stack `deploy/local/test.sh` started, prints the
figures and writes them as JSON under `.local/chaos/`. `test_chaos.py` runs a small version.
"""

import argparse
import asyncio
import contextlib
import email
import email.policy
import json
import logging
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI, Request, Response
from pymongo import AsyncMongoClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from avis.shared.kafka import partitions_of
from avis.shared.mongo import Document
from avis.shared.security import Role
from avis.shared.topics import CASE_SUBMITTED, REPORT_READY, REVIEW_ASSIGNED, REVIEW_COMPLETED
from tests.reliability.mixes import (
    CORRECTED,
    FHIR_INSTITUTION,
    MIXES,
    RULE_SPECIALTY,
    Shares,
    mix_of,
    told_versions,
)
from tests.reliability.mixes import settings as mix_settings
from tests.support.basics import (
    BOOTSTRAP,
    JWT_SECRET,
    KAFKA,
    MONGO_URL,
    ROOT,
    SEALING_KEYS,
    infra,
    kafka_passwords,
    serve,
)
from tests.support.fhir import violations
from tests.support.kms import kms_env
from tests.support.samples import case_body, consent_body, pdf, upload
from tests.support.stack import Instance, ServiceStack

TOPICS = (CASE_SUBMITTED, REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY)
DLQS = tuple(f"{t}.dlq" for t in TOPICS)
GROUP_TOPICS = {
    "intake": [REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY],
    "review": [CASE_SUBMITTED, REPORT_READY],
    "reports": [CASE_SUBMITTED, REVIEW_COMPLETED],
    "notify": [CASE_SUBMITTED, REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY],
}
# Each service's single-actor jobs (their leases); a kill of a copy takes their holder, in turn.
LEASE_JOBS = {  # "outbox": the copy that publishes the outboxes of copies that are gone
    "intake": ["inbox", "outbox"],
    "review": ["matcher", "overdue", "outbox"],
    "reports": ["parking", "outbox"],
    "notify": ["email", "webhook", "outbox"],
}
PRODUCES = {
    "intake": CASE_SUBMITTED,
    "review": REVIEW_ASSIGNED,
    "reports": REPORT_READY,
}
HOOK_TYPES = [
    "avis.case.submitted.v1",
    "avis.review.assigned.v1",
    "avis.review.information-requested.v1",
    "avis.review.resumed.v1",
    "avis.review.second-reading-requested.v1",
    "avis.review.follow-up-asked.v1",
    "avis.review.follow-up-answered.v1",
    "avis.review.translation-queued.v1",
    "avis.review.translation-done.v1",
    "avis.report.ready.v1",
    "avis.report.physician-copy-sent.v1",
]
# The events intake always keeps a timeline entry of (an assignment's steps may be skipped by
# the sequence rule when they arrive after a later status).
TIMELINE_ALWAYS = {
    "avis.review.completed.v1",
    "avis.report.ready.v1",
    "avis.review.information-requested.v1",
    "avis.case.information-provided.v1",
    "avis.review.resumed.v1",
    "avis.review.second-reading-requested.v1",
    "avis.review.second-reading-agreed.v1",
    "avis.review.follow-up-asked.v1",
    "avis.review.follow-up-answered.v1",
    "avis.review.translation-queued.v1",
    "avis.review.translation-done.v1",
    "avis.report.physician-copy-sent.v1",
}
PARIS = ZoneInfo("Europe/Paris")
STATE = Path(os.environ.get("AVIS_STATE_DIR", ROOT / ".local/test"))
MAIL_DIR = STATE / "smtp" / "mail"
SINK_CONTROL = STATE / "smtp" / "control.json"
RESULTS = ROOT / ".local" / "chaos"
SPECIALTY = "oncology"


@dataclass
class Plan:
    """The size, the seed and the faults of one run."""

    cases: int = 300
    seed: int = 1
    reviewers: int = 16
    capacity: tuple[int, int] = (3, 6)
    filers: int = 6  # cases being filed at once
    fault_seconds: float = 300.0  # the window the faults are spread over
    kills_per_service: int = 4
    broker_down_seconds: float = 15.0
    store_down_seconds: float = 10.0
    smtp_fail_seconds: float = 30.0
    partner_fail_seconds: float = 45.0
    fhir_fail_seconds: float = 30.0  # the institution's FHIR endpoint
    decline_rate: float = 0.15
    correct_rate: float = 0.15
    think_seconds: float = 10.0  # a reviewer takes up to this long before each step
    quiet_timeout: float = 600.0
    # Copies of each service; with more than one, a kill takes the copy that holds the service's
    # single-actor job (LEASE_JOBS) and the run times the take-over by another copy.
    copies: int = 1
    outages: bool = True  # False: kills only (no broker, store, SMTP, partner, FHIR outage)
    # The share of the cases each later path of the care pathway takes (mixes.py's table).
    mixes: Shares = field(default_factory=Shares)


@dataclass
class Fault:
    """One fault of the schedule, `at` seconds into the fault window."""

    at: float
    kind: str  # kill | broker | store | smtp | partner | fhir
    service: str = ""
    how: str = ""  # for a kill: random | after-publish | after-send


@dataclass
class CaseMix:
    """What the driver does with one case (drawn from the seed)."""

    index: int
    filer: str  # partner-a | partner-b | patient
    decline: bool
    correct: bool
    path: str = ""  # a later path of the care pathway (mixes.MIXES), or none
    params: dict[str, Any] = field(default_factory=dict)  # the path's, drawn from the seed
    case_id: str = ""  # once filed


def schedule(plan: Plan) -> tuple[list[Fault], list[CaseMix]]:
    """The faults and the case mix the seed gives."""
    rng = random.Random(plan.seed)
    window = plan.fault_seconds
    faults: list[Fault] = []
    for service in ("intake", "review", "reports", "notify"):
        for _ in range(plan.kills_per_service):
            hows = ["random", "after-send" if service == "notify" else "after-publish"]
            how = rng.choice(hows)
            faults.append(Fault(rng.uniform(0.05, 0.9) * window, "kill", service, how))
    # The sink and the partner fail while traffic flows (before the broker's outage stops it).
    outages = [("partner", 0.05, 0.15), ("smtp", 0.1, 0.2), ("broker", 0.35, 0.45)]
    outages.append(("store", 0.7, 0.8))
    for kind, low, high in outages:
        at = rng.uniform(low, high) * window  # drawn either way: the same seed, the same kills
        if plan.outages:
            faults.append(Fault(at, kind))
    faults.sort(key=lambda f: f.at)
    mix = []
    for i in range(plan.cases):
        filer = rng.choices(["partner-a", "partner-b", "patient"], [4, 3, 3])[0]
        mix.append(
            CaseMix(i, filer, rng.random() < plan.decline_rate, rng.random() < plan.correct_rate)
        )
    plan.mixes.draw(plan.seed, mix)  # a seed of its own: the same seed, the same faults
    # The FHIR endpoint fails once some physician's copy is posted there (a seed of its own).
    if plan.outages and any(m.params.get("channel") == "fhir" for m in mix):
        at = random.Random(f"{plan.seed}:fhir").uniform(0.15, 0.3) * window
        faults.append(Fault(at, "fhir"))
        faults.sort(key=lambda f: f.at)
    return faults, mix


# --- the partners' endpoints ------------------------------------------------------------------


@dataclass
class Hook:
    """One request a partner's endpoint got."""

    path: str
    webhook_id: str
    event_id: str
    event_type: str
    case_id: str
    status: int
    verified: bool


@dataclass
class Partners:
    """The partners' webhook endpoints on one loopback server: `/<partner>`; each verifies the
    signature when the request arrives (the signature's time is checked against now), and
    answers 204, or 500 while its path is in `failing`."""

    secrets: dict[str, str] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    received: list[Hook] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{partner}")
        async def hook(partner: str, request: Request) -> Response:
            body = await request.body()
            headers = dict(request.headers)
            try:
                payload = Webhook(self.secrets[partner]).verify(body, headers)
                verified = True
            except (KeyError, WebhookVerificationError):
                payload, verified = json.loads(body), False
            status = 500 if partner in self.failing else 204
            self.received.append(
                Hook(
                    partner,
                    headers.get("webhook-id", ""),
                    str(payload.get("id")),
                    str(payload.get("type")),
                    str(payload.get("subject")),
                    status,
                    verified,
                )
            )
            if status == 204:
                self.arrived.set()
            return Response(status_code=status)

        return app


@dataclass
class Post:
    """One post the institution's FHIR endpoint got: its `webhook-id`, the document's
    identifier (the report version's key) and what is wrong with it as a FHIR document."""

    webhook_id: str
    document: str
    status: int
    violations: list[str]


@dataclass
class Institution:
    """The FHIR endpoint of the physicians' institution (`/fhir/<code>` on a loopback server):
    it keeps each post's `webhook-id` and the document's identifier (never the document), checks
    the document, and answers 200, or 500 while `failing`."""

    failing: bool = False
    received: list[Post] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/fhir/{institution}")
        async def post(institution: str, request: Request) -> Response:
            try:
                bundle = json.loads(await request.body())
            except ValueError:
                bundle = None
            wrong = violations(bundle) if isinstance(bundle, dict) else ["not JSON"]
            if institution != FHIR_INSTITUTION:
                wrong.append(f"posted to {institution}")
            document = str(((bundle or {}).get("identifier") or {}).get("value", ""))
            status = 500 if self.failing else 200
            self.received.append(
                Post(request.headers.get("webhook-id", ""), document, status, wrong)
            )
            return Response(status_code=status)

        return app


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Figures:
    """What a run measured; `problems` lists every audit failure, in words."""

    seed: int = 0
    cases: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    kills_by_moment: dict[str, int] = field(default_factory=dict)
    broker_restarts: int = 0
    store_restarts: int = 0
    smtp_fail_seconds: float = 0.0
    partner_fail_seconds: float = 0.0
    fhir_fail_seconds: float = 0.0
    service_restarts: int = 0
    events_published: int = 0
    events_republished: int = 0  # the same ce_id on a topic more than once (at-least-once)
    declines: int = 0
    corrections: int = 0
    report_versions: int = 0
    paths: dict[str, int] = field(default_factory=dict)  # cases per later path (mixes.py)
    information_requests: int = 0
    information_answered: int = 0
    information_expired: int = 0
    follow_ups_asked: int = 0
    follow_ups_answered: int = 0
    addenda: int = 0  # report versions that carry answers to follow-up questions
    second_readings: int = 0
    second_reading_comments: int = 0
    translations: dict[str, int] = field(default_factory=dict)  # done, per way
    # Of them, submitted while the faults still happened (before the last one was over).
    translations_under_faults: dict[str, int] = field(default_factory=dict)
    translated_reports: int = 0  # reports that state their translation
    physician_copies: dict[str, int] = field(default_factory=dict)  # told, per channel
    emails: int = 0
    email_copies: int = 0  # the same Message-ID received more than once (at-least-once)
    pro_emails: int = 0  # of `emails`, to the professionals
    # Repeated sends: each Message-ID / webhook-id that arrived more than once, and how often
    # (a redelivery after a kill keeps its id; a new id for the same event is a failure).
    repeated_emails: dict[str, int] = field(default_factory=dict)
    webhook_copies: int = 0  # successful deliveries of a webhook-id already delivered
    repeated_webhooks: dict[str, int] = field(default_factory=dict)
    fhir_copies: int = 0  # successful FHIR posts of a webhook-id already posted
    repeated_fhir: dict[str, int] = field(default_factory=dict)
    # Per lease job: seconds from its holder's SIGKILL to the next term of another copy.
    takeovers: dict[str, list[float]] = field(default_factory=dict)
    email_failed_attempts: int = 0
    webhook_deliveries: int = 0
    webhook_failed_attempts: int = 0
    fhir_posts: int = 0  # successful posts to the institution's FHIR endpoint
    fhir_failed_attempts: int = 0
    capacity_samples: int = 0
    max_load_ratio: float = 0.0
    lost: int = 0
    duplicated_effects: int = 0
    stuck_cases: int = 0
    dlq_records: int = 0
    capacity_violations: int = 0
    time_to_quiet_seconds: float = 0.0
    duration_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def problem(self, kind: str, text: str) -> None:
        """Count an audit failure under `kind` (lost, duplicated_effects, ...) and say it."""
        if kind:
            setattr(self, kind, getattr(self, kind) + 1)
        if len(self.problems) < 200:
            self.problems.append(text)


class Run:
    """One fault run over a started ServiceStack."""

    def __init__(
        self,
        plan: Plan,
        stack: ServiceStack,
        partners: Partners,
        hooks_url: str,
        institution: Institution | None = None,
    ):
        self.plan = plan
        self.stack = stack
        self.partners = partners
        self.hooks_url = hooks_url
        self.institution = institution or Institution()
        self.faults, self.mix = schedule(plan)
        self.tag = f"chx{plan.seed}-{uuid.uuid4().hex[:8]}"
        self.figures = Figures(seed=plan.seed, cases=plan.cases)
        self.mongo: AsyncMongoClient[Document] = AsyncMongoClient(
            MONGO_URL, tz_aware=True, serverSelectionTimeoutMS=3000
        )
        self.reviewer_ids = [f"{self.tag}-r{i}" for i in range(plan.reviewers)]
        self.capacity: dict[str, int] = {}
        self.cases: dict[str, CaseMix] = {}  # case id -> its mix
        self.emails: dict[str, str] = {}  # case id -> the patient's address
        self.mail: dict[str, Counter[str]] = {}  # the run's mailboxes, as the audit read them
        self.partner_of: dict[str, str] = {}  # case id -> the partner it is shared with
        self.acting: dict[str, asyncio.Task[None]] = {}
        self.clients: dict[tuple[str, str], httpx.AsyncClient] = {}
        self.start_offsets: dict[TopicPartition, int] = {}
        self.published = Counter[str]()  # topic -> records seen by the tail
        self.kill_turn = Counter[str]()  # service -> kills so far (which job the next takes)
        self.watching: list[asyncio.Task[None]] = []  # take-over timers
        self.tick = asyncio.Event()
        self.filing_done = False
        self.faults_done = False

    def next_job(self, service: str) -> str:
        """The single-actor job whose holder the next kill of `service` takes (in turn)."""
        jobs = LEASE_JOBS[service]
        self.kill_turn[service] += 1
        return jobs[(self.kill_turn[service] - 1) % len(jobs)]

    async def holder(self, service: str, job: str) -> tuple[int, int | None]:
        """The latest epoch of `job`'s lease and its holder's pid (None: released or none)."""
        leases = self.db(service)["leases"]
        head = await leases.find_one({"_id": f"{job}:head"})
        epoch = int(head["epoch"]) if head else 0
        while await leases.find_one({"_id": f"{job}:{epoch + 1}"}) is not None:
            epoch += 1
        doc = await leases.find_one({"_id": f"{job}:{epoch}"})
        if doc is None or doc.get("released"):
            return epoch, None
        return epoch, int(str(doc["holder"]).rsplit(":", 2)[-2])

    async def target(self, service: str, job: str) -> tuple[Instance, int]:
        """The copy to kill: the holder of `job`'s lease when it holds it, else the first copy
        (and 0 for the epoch: nothing to time)."""
        members = self.stack.of(service)
        if len(members) > 1:
            with contextlib.suppress(Exception):
                epoch, pid = await self.holder(service, job)
                for member in members:
                    if member.alive() and member.process and member.process.pid == pid:
                        return member, epoch
        return members[0], 0

    async def time_takeover(self, service: str, job: str, epoch: int, killed_at: float) -> None:
        """Seconds from the holder's kill to a newer term of `job` (another copy acting)."""
        deadline = killed_at + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                latest, _ = await self.holder(service, job)
                if latest > epoch:
                    took = round(time.monotonic() - killed_at, 2)
                    self.figures.takeovers.setdefault(f"{service}:{job}", []).append(took)
                    log(f"{service}:{job} taken over {took:.1f} s after its holder's kill")
                    return
            await asyncio.sleep(0.1)
        self.figures.problems.append(f"{service}:{job}: no take-over within 120 s of a kill")

    def db(self, service: str) -> Any:
        return self.mongo[self.stack.databases[service]]

    def client(self, service: str, sub: str, role: Role, partner: str | None = None) -> Any:
        key = (service, sub)
        if key not in self.clients:
            self.clients[key] = self.stack.client(service, sub, role, partner)
        return self.clients[key]

    def filer(self, mix: CaseMix, service: str) -> Any:
        """The client of whoever filed the case (its patient, or the partner's API)."""
        if mix.filer == "patient":
            return self.client(service, f"{self.tag}-pat{mix.index}", "patient")
        pid = f"{self.tag}-{mix.filer}"
        return self.client(service, f"{pid}-api", "partner", pid)

    async def retrying(self, call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        return await retrying(call)

    async def close(self) -> None:
        for c in self.clients.values():
            await c.aclose()
        await self.mongo.close()

    # --- set-up -------------------------------------------------------------------------------

    async def setup(self) -> None:
        rng = random.Random(self.plan.seed + 1)
        coordinator = self.client("review", f"{self.tag}-coord", "coordinator")
        for rid in self.reviewer_ids:
            self.capacity[rid] = rng.randint(*self.plan.capacity)
            body = {
                "id": rid,
                "display_name": f"Reviewer {rid}",
                "specialties": [SPECIALTY, RULE_SPECIALTY],
                "languages": ["fr", "en"],
                "institution_code": "HOSP-CHAOS",
                "capacity": self.capacity[rid],
                # Told when work waits for them (follow-ups, readings, comments): `pro_*` emails.
                "email": f"{rid}@hopital.example",
            }
            added = await retrying(partial(coordinator.post, "/v1/reviewers", json=body))
            assert added.status_code in (200, 201), added.text
        for mix in MIXES.values():
            await mix.setup(self)
        for partner in ("partner-a", "partner-b"):
            pid = f"{self.tag}-{partner}"
            sub = self.client("notify", f"{pid}-api", "partner", pid)
            wanted = {"url": f"{self.hooks_url}/{partner}", "event_types": HOOK_TYPES}
            created = await retrying(partial(sub.post, "/v1/subscriptions", json=wanted))
            assert created.status_code == 201, created.text
            self.partners.secrets[partner] = created.json()["secret"]
        consumer = AIOKafkaConsumer(**KAFKA.options(), group_id=None)
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in TOPICS + DLQS for p in await partitions(t)]
            self.start_offsets = dict(await consumer.end_offsets(tps))
        finally:
            await consumer.stop()

    # --- filing -------------------------------------------------------------------------------

    async def file_all(self) -> None:
        gate = asyncio.Semaphore(self.plan.filers)
        spacing = self.plan.fault_seconds * 0.75 / max(self.plan.cases, 1)

        async def one(mix: CaseMix) -> None:
            async with gate:
                await self.file(mix)

        tasks = []
        for mix in self.mix:
            tasks.append(asyncio.create_task(one(mix)))
            await asyncio.sleep(spacing)
        await asyncio.gather(*tasks)
        self.filing_done = True

    async def file(self, mix: CaseMix) -> None:
        address = f"{self.tag}-p{mix.index}@exemple.fr"
        path = mix_of(mix)
        body = case_body(specialty=path.specialty(mix, SPECIALTY), **path.filing(self, mix))
        body["patient"] = {**body["patient"], "email": address, "preferred_language": "fr"}
        scopes = ["review", *path.consents(mix)]
        filer = self.filer(mix, "intake")
        if mix.filer != "patient":
            body["partner_reference"] = f"REF-{mix.index}"
            scopes.append("share_with_partner")
        key = f"{self.tag}-case-{mix.index}"
        draft = await retrying(
            lambda: filer.post("/v1/cases", json=body, headers={"Idempotency-Key": key})
        )
        assert draft.status_code in (200, 201), draft.text
        case_id = draft.json()["case_id"]
        mix.case_id = case_id
        self.cases[case_id] = mix
        self.emails[case_id] = address
        if mix.filer != "patient":
            self.partner_of[case_id] = mix.filer
        data = pdf(f"{self.tag}-{mix.index}")
        documents = f"/v1/cases/{case_id}/documents"
        stored = await retrying(lambda: filer.post(documents, **upload(data)))
        assert stored.status_code in (200, 201), stored.text
        submitted = await retrying(
            lambda: filer.post(f"/v1/cases/{case_id}/submit", json=consent_body(*scopes))
        )
        assert submitted.status_code == 200, submitted.text

    # --- the reviewers ------------------------------------------------------------------------

    async def drive(self) -> None:
        """Play the reviewers until told to stop: act on every open assignment, check loads."""
        reviewers = self.db("review")["reviewers"]
        while True:
            try:
                docs = await reviewers.find({"_id": {"$in": self.reviewer_ids}}).to_list()
            except Exception:  # the store is away: the driver waits like everyone else
                await asyncio.sleep(1.0)
                continue
            self.figures.capacity_samples += 1
            for doc in docs:
                load, cap = len(doc.get("open_assignments", [])), self.capacity[doc["_id"]]
                self.figures.max_load_ratio = max(self.figures.max_load_ratio, load / cap)
                if load > cap:
                    self.figures.problem(
                        "capacity_violations",
                        f"reviewer {doc['_id']} held {load} open assignments, capacity {cap}",
                    )
                for aid in doc.get("open_assignments", []):
                    # A second reading counts as `second:<id>`: its first reader's script acts.
                    if aid not in self.acting and not aid.startswith("second:"):
                        self.acting[aid] = asyncio.create_task(self.act(doc["_id"], aid))
            await asyncio.sleep(0.5)

    async def assignment(self, aid: str) -> Document:
        while True:
            with contextlib.suppress(Exception):
                doc = await self.db("review")["assignments"].find_one({"_id": aid})
                if doc is not None:
                    return dict(doc)
            await asyncio.sleep(0.5)

    async def act(self, reviewer_id: str, aid: str) -> None:
        """One assignment's whole script: decline, or accept, answer and maybe correct."""
        doc = await self.assignment(aid)
        mix = self.cases.get(doc["case_id"])
        if mix is None:  # not one of this run's cases
            return
        http = self.client("review", reviewer_id, "reviewer")
        url = f"/v1/assignments/{aid}"
        think = random.Random(f"{self.plan.seed}:{mix.index}:{doc['round']}")
        await asyncio.sleep(think.uniform(0, self.plan.think_seconds))
        if mix.decline and doc["round"] == 1:
            body = {"reason_code": "no_availability", "reason": "Away next week"}
            await self.step(aid, lambda: http.post(f"{url}/decline", json=body), "declined")
            self.figures.declines += 1
            return
        path = mix_of(mix)  # a later path of the care pathway, or none (mixes.py)
        await path.before_accept(self, mix, aid, http)
        await self.step(aid, lambda: http.post(f"{url}/accept"), "accepted")
        await path.before_opinion(self, mix, aid, http)
        await asyncio.sleep(think.uniform(0, self.plan.think_seconds))
        await path.opinion(self, mix, aid, http)
        if mix.correct:
            await self.step(aid, lambda: http.put(f"{url}/opinion", json=CORRECTED), "corrected")
            self.figures.corrections += 1
        await path.after_opinion(self, mix, aid, http)

    async def step(
        self,
        aid: str,
        call: Callable[[], Awaitable[httpx.Response]],
        reached: str,
        done: Callable[[Document], bool] | None = None,
    ) -> None:
        """Call until it succeeds; a 409 after a retry is fine once the assignment moved on
        (`done` says when it has, for a step other than the round's own)."""
        while True:
            answer = await retrying(call)
            if answer.status_code < 300:
                return
            doc = await self.assignment(aid)
            if done is not None:
                moved_on = done(doc)
            else:
                moved_on = {
                    "accepted": doc["status"] in ("accepted", "completed"),
                    "completed": bool(doc.get("opinions")),
                    "corrected": len(doc.get("opinions", [])) >= 2,
                    "declined": doc["status"] == "declined",
                }[reached]
            if answer.status_code == 409 and moved_on:
                return
            self.figures.problem("", f"{aid}: {reached} answered {answer.status_code}")
            await asyncio.sleep(1.0)

    # --- the faults ---------------------------------------------------------------------------

    async def tail(self) -> None:
        """Follow the topics, so a kill can land right after a relay published."""
        consumer = AIOKafkaConsumer(**KAFKA.options(), group_id=None)
        await consumer.start()
        try:
            tps = [tp for tp in self.start_offsets if tp.topic in TOPICS]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, self.start_offsets[tp])
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    self.published[tp.topic] += len(records)
                if batch:
                    self.tick.set()
                    self.tick = asyncio.Event()
        finally:
            await consumer.stop()

    async def moment(self, how: str, service: str) -> None:
        """Wait for the moment a kill should land (10 s at most)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                if how == "after-publish":
                    topic = PRODUCES[service]
                    seen = self.published[topic]
                    while self.published[topic] == seen:
                        await self.tick.wait()
                elif how == "after-send":
                    mails = MAIL_DIR.stat().st_mtime_ns
                    hooks = len(self.partners.received)
                    posts = len(self.institution.received)
                    while True:  # a new email in the sink, a partner's delivery, a FHIR post
                        if MAIL_DIR.stat().st_mtime_ns != mails:
                            break
                        if len(self.partners.received) != hooks:
                            break
                        if len(self.institution.received) != posts:
                            break
                        await asyncio.sleep(0.02)

    async def inject(self) -> None:
        started = time.monotonic()
        tasks = []
        for fault in self.faults:
            await asyncio.sleep(max(0.0, started + fault.at - time.monotonic()))
            tasks.append(asyncio.create_task(self.fault(fault)))
        await asyncio.gather(*tasks)
        self.faults_done = True

    async def fault(self, fault: Fault) -> None:
        plan, f = self.plan, self.figures
        if fault.kind == "kill":
            job = self.next_job(fault.service)
            for _ in range(60):  # a service still restarting from an earlier kill: wait for it
                member, epoch = await self.target(fault.service, job)
                if member.alive():
                    await self.moment(fault.how, fault.service)
                    member, epoch = await self.target(fault.service, job)
                if member.alive():
                    process = member.process
                    assert process is not None
                    self.stack.kill(member, signal.SIGKILL)
                    killed_at = time.monotonic()
                    await asyncio.to_thread(process.wait)  # gone before the next kill looks
                    f.kills[fault.service] = f.kills.get(fault.service, 0) + 1
                    f.kills_by_moment[fault.how] = f.kills_by_moment.get(fault.how, 0) + 1
                    held = f" holding {job}:{epoch}" if epoch else ""
                    log(f"SIGKILL {member.name} ({fault.how}){held}")
                    if epoch:
                        self.watching.append(
                            asyncio.create_task(
                                self.time_takeover(fault.service, job, epoch, killed_at)
                            )
                        )
                    return
                await asyncio.sleep(1.0)
            log(f"{fault.service} was never up to be killed")
        elif fault.kind in ("broker", "store"):
            which = "kafka" if fault.kind == "broker" else "ferretdb"
            down = plan.broker_down_seconds if which == "kafka" else plan.store_down_seconds
            log(f"stopping {which} for {down:.0f} s")
            await asyncio.to_thread(infra, "stop", which)
            await asyncio.sleep(down)
            await asyncio.to_thread(infra, "start", which)
            await asyncio.to_thread(infra, "wait", which)
            log(f"{which} back")
            if which == "kafka":
                f.broker_restarts += 1
            else:
                f.store_restarts += 1
        elif fault.kind == "smtp":
            # At least `smtp_fail_seconds`, and on until the sink refused something (it counts
            # its rule down), so the failure always meets an email, however slow the machine.
            log(f"the SMTP sink fails for {plan.smtp_fail_seconds:.0f} s or more")
            began, budget = time.monotonic(), 1_000_000
            rule = {"match": self.tag, "mode": "fail", "count": budget}
            SINK_CONTROL.parent.mkdir(parents=True, exist_ok=True)
            SINK_CONTROL.write_text(json.dumps({"rules": [rule]}), encoding="utf-8")
            await asyncio.sleep(plan.smtp_fail_seconds)
            for _ in range(240):
                with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                    rules = json.loads(SINK_CONTROL.read_text(encoding="utf-8"))["rules"]
                    if rules[0]["count"] < budget:
                        break
                await asyncio.sleep(0.5)
            SINK_CONTROL.unlink(missing_ok=True)
            f.smtp_fail_seconds = round(time.monotonic() - began, 1)
            log("the SMTP sink works again")
        elif fault.kind == "partner":
            log(f"partner-b's endpoint fails for {plan.partner_fail_seconds:.0f} s or more")
            began = time.monotonic()
            self.partners.failing.add("partner-b")
            await asyncio.sleep(plan.partner_fail_seconds)
            for _ in range(240):  # on until it refused a delivery at least once
                if any(h.status == 500 for h in self.partners.received):
                    break
                await asyncio.sleep(0.5)
            self.partners.failing.discard("partner-b")
            f.partner_fail_seconds = round(time.monotonic() - began, 1)
            log("partner-b's endpoint works again")
        elif fault.kind == "fhir":
            log(f"the FHIR endpoint fails for {plan.fhir_fail_seconds:.0f} s or more")
            began = time.monotonic()
            self.institution.failing = True
            await asyncio.sleep(plan.fhir_fail_seconds)
            for _ in range(240):  # on until it refused a post and its retry, at least
                if sum(p.status >= 500 for p in self.institution.received) >= 2:
                    break
                await asyncio.sleep(0.5)
            self.institution.failing = False
            f.fhir_fail_seconds = round(time.monotonic() - began, 1)
            # As a coordinator would after an outage (nothing to do if it is still enabled).
            coordinator = self.client("notify", f"{self.tag}-coord", "coordinator")
            url = f"/v1/fhir-endpoints/{FHIR_INSTITUTION}/enable"
            enabled = await retrying(lambda: coordinator.post(url))
            if enabled.status_code != 200:
                f.problem("", f"re-enabling the FHIR endpoint answered {enabled.status_code}")
            log("the FHIR endpoint works again")

    # --- quiet --------------------------------------------------------------------------------

    async def pending(self) -> list[str]:
        """What still moves: cases not done, work queued, outboxes, consumer lag."""
        left: list[str] = []
        ids = list(self.cases)
        intake = (
            await self.db("intake")["cases"].find({"_id": {"$in": ids}}, {"status": 1}).to_list()
        )
        not_ready = [c["_id"] for c in intake if c["status"] != "report_ready"]
        if not_ready or len(intake) < len(ids):
            left.append(f"{len(not_ready) + len(ids) - len(intake)} cases not report_ready")
        if any(not t.done() for t in self.acting.values()):
            left.append("reviewers still acting")
        for service in ("intake", "review", "reports", "notify"):
            if await self.db(service)["outbox_hints"].count_documents({}):
                left.append(f"{service} outbox pending")
        sends = await self.db("notify")["sends"].count_documents({"status": "queued"})
        if sends:
            left.append(f"{sends} sends queued")
        queued = await self.db("notify")["deliveries"].count_documents(
            {"status": {"$nin": ["delivered"]}}
        )
        if queued:
            left.append(f"{queued} deliveries not delivered")
        lag = await consumer_lag(self.start_offsets)
        if lag:
            left.append(f"consumer lag {lag}")
        return left

    async def stuck(self) -> str:
        """What notify still holds back and why it might: its leases (a job whose lease nobody
        holds sends nothing), each queued email and undelivered delivery with its filing, and
        its log lines that name them (a failed run's evidence)."""
        notify = self.db("notify")
        lines = [
            f"lease {d['_id']} holder {d.get('holder')} expires {d.get('expires_at')}"
            async for d in notify["leases"].find({"job": {"$in": ["email", "webhook"]}})
        ]
        due = {d["_id"]: d.get("ids", d.get("bucket")) async for d in notify["due"].find({})}
        handoffs = {d["item"]: d["at"] async for d in notify["handoffs"].find({})}
        lines.append(f"due-queues {due}")
        logs = "".join(
            m.log.read_text(errors="replace") for m in self.stack.of("notify") if m.log.exists()
        ).splitlines()
        held = [
            *[d async for d in notify["sends"].find({"status": "queued"})],
            *[d async for d in notify["deliveries"].find({"status": {"$ne": "delivered"}})],
        ]
        for d in held:
            attempts = [(a["outcome"], a.get("code"), a.get("reason")) for a in d["attempts"]]
            lines.append(
                f"held {d['_id']} case {d['case_id']} {d['status']} created {d['created_at']} "
                f"next {d.get('next_at')} attempts {attempts[-3:]} "
                f"handoff {handoffs.get(d['_id'])}"
            )
            lines += [f"  | {line[:300]}" for line in logs if d["_id"] in line][-4:]
        lines += [f"  | {line[:300]}" for line in logs if '"lease' in line][-12:]
        return "\n".join(lines)

    async def quiet(self) -> None:
        started = time.monotonic()
        deadline = started + self.plan.quiet_timeout
        last: list[str] = []
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(60):
                    last = await self.pending()
            except Exception as error:  # a store hiccup: look again
                last = [repr(error)]
            if not last:
                break
            if int(time.monotonic() - started) % 30 < 2:
                log(f"waiting for quiet: {'; '.join(last)}")
            await asyncio.sleep(2.0)
        self.figures.time_to_quiet_seconds = round(time.monotonic() - started, 1)
        if last:
            log(f"not quiet after {self.plan.quiet_timeout:.0f} s: {last}")
            with contextlib.suppress(Exception):
                print(await self.stuck())
        else:
            log(f"quiet after {self.figures.time_to_quiet_seconds:.0f} s")
        await asyncio.sleep(3.0)  # anything late (a duplicate) has time to show

    # --- the audit ----------------------------------------------------------------------------

    async def audit(self) -> None:
        f = self.figures
        events = await read_events(self.start_offsets, TOPICS)
        mine = [e for e in events if e["case_id"] in self.cases]
        by_id: dict[str, dict[str, Any]] = {}
        for e in mine:
            by_id.setdefault(e["id"], e)
        f.events_published = len(by_id)
        f.events_republished = len(mine) - len(by_id)
        by_case: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in by_id.values():
            by_case[e["case_id"]].append(e)
        await self.audit_producers(by_case)
        await self.audit_review(by_case)
        await self.audit_intake(by_case)
        await self.audit_reports(by_case)
        await self.audit_notify(by_case)
        self.audit_webhooks(by_case)
        await self.audit_fhir()
        for case_id, mix in self.cases.items():
            await mix_of(mix).audit_reads(self, case_id, mix)
        dead = await read_events(self.start_offsets, DLQS)
        f.dlq_records = 0
        for e in dead:
            f.problem("dlq_records", f"dead letter on {e['topic']}: {e['type']} {e['id']}")

    async def audit_producers(self, by_case: dict[str, list[dict[str, Any]]]) -> None:
        """One event per fact: a fact published twice under two ids would be done twice."""
        for case_id in self.cases:
            facts = Counter(fact_key(e) for e in by_case.get(case_id, []))
            for fact, n in facts.items():
                if n > 1:
                    self.figures.problem(
                        "duplicated_effects", f"{case_id}: {fact} published {n} times"
                    )

    async def audit_review(self, by_case: dict[str, list[dict[str, Any]]]) -> None:
        """Review: one round per submission and one per decline; loads within capacity."""
        f = self.figures
        rounds = (
            await self.db("review")["assignments"]
            .find({"case_id": {"$in": list(self.cases)}})
            .to_list()
        )
        per_case: dict[str, list[Document]] = defaultdict(list)
        for r in rounds:
            per_case[r["case_id"]].append(r)
        for case_id, mix in self.cases.items():
            mine = sorted(per_case.get(case_id, []), key=lambda r: r["round"])
            want = 2 if mix.decline else 1
            if len(mine) < want:
                f.problem("lost", f"{case_id}: {len(mine)} review rounds, expected {want}")
            elif len(mine) > want:
                f.problem("duplicated_effects", f"{case_id}: {len(mine)} review rounds")
            final = mine[-1] if mine else None
            versions = len(final.get("opinions", [])) if final else 0
            path = mix_of(mix)
            if versions != path.opinion_versions(mix):
                f.problem("stuck_cases", f"{case_id}: {versions} opinion versions in review")
            if mix.path:
                f.paths[mix.path] = f.paths.get(mix.path, 0) + 1
                if final is not None:
                    path.audit(self, case_id, mix, dict(final), by_case.get(case_id, []))
        # From the rounds' own times: at no moment more open rounds than capacity.
        moves: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
        for r in rounds:
            end = r.get("declined_at") or r.get("completed_at") or r.get("cancelled_at")
            moves[r["reviewer_id"]].append((r["assigned_at"], 1))
            if end is not None:
                moves[r["reviewer_id"]].append((end, -1))
        for rid, steps in moves.items():
            load = peak = 0
            for _, step in sorted(steps, key=lambda s: (s[0], s[1])):
                load += step
                peak = max(peak, load)
            if peak > self.capacity.get(rid, peak):
                f.problem(
                    "capacity_violations",
                    f"reviewer {rid} held {peak} rounds at once, capacity {self.capacity[rid]}",
                )

    async def audit_intake(self, by_case: dict[str, list[dict[str, Any]]]) -> None:
        """Intake: report_ready, one timeline entry per event id (none twice)."""
        f = self.figures
        docs = (
            await self.db("intake")["cases"]
            .find({"_id": {"$in": list(self.cases)}}, {"status": 1, "timeline": 1})
            .to_list()
        )
        found = {d["_id"]: d for d in docs}
        for case_id in self.cases:
            doc = found.get(case_id)
            if doc is None or doc["status"] != "report_ready":
                status = doc["status"] if doc else "missing"
                f.problem("stuck_cases", f"{case_id}: {status} at intake")
                continue
            # each entry one text (or a document, written before: docs/store-contract.md)
            entries = Counter(
                (json.loads(e) if isinstance(e, str) else e)["id"] for e in doc.get("timeline", [])
            )
            for eid, n in entries.items():
                if n > 1:
                    f.problem("duplicated_effects", f"{case_id}: timeline entry {eid} x{n}")
            for e in by_case.get(case_id, []):
                if e["type"] in TIMELINE_ALWAYS and entries[e["id"]] == 0:
                    f.problem("lost", f"{case_id}: {e['type']} {e['id']} not in the timeline")

    async def audit_reports(self, by_case: dict[str, list[dict[str, Any]]]) -> None:
        """Reports: one version per opinion version, each stored once."""
        f = self.figures
        docs = (
            await self.db("reports")["cases"]
            .find(
                {"_id": {"$in": list(self.cases)}},
                {"versions": 1, "report_id": 1, "addenda.follow_up_id": 1},
            )
            .to_list()
        )
        found = {d["_id"]: d for d in docs}
        wanted: dict[str, list[str]] = {}
        for case_id in self.cases:
            events = by_case.get(case_id, [])
            completed = [e for e in events if e["type"] == "avis.review.completed.v1"]
            opinion_versions = sorted(e["data"]["version"] for e in completed)
            answered = {
                e["data"]["follow_up_id"]
                for e in events
                if e["type"] == "avis.review.follow-up-answered.v1"
            }
            doc = found.get(case_id)
            entries = (doc or {}).get("versions", [])
            issued = sorted(v["opinion_version"] for v in entries)
            f.report_versions += len(issued)
            f.addenda += sum(1 for v in entries if v.get("addenda"))
            # One version per opinion version, and one more per answered follow-up question.
            want = len(set(opinion_versions)) + len(answered)
            if len(issued) > want:
                f.problem("duplicated_effects", f"{case_id}: report versions {issued}")
            elif len(issued) < want:
                f.problem("lost", f"{case_id}: {len(issued)} report versions, expected {want}")
            added = [a["follow_up_id"] for a in (doc or {}).get("addenda", [])]
            if len(added) > len(set(added)):
                f.problem("duplicated_effects", f"{case_id}: addenda {added}")
            elif set(added) != answered:
                f.problem("lost", f"{case_id}: addenda {added}, answers published {answered}")
            if sorted(set(issued)) != sorted(set(opinion_versions)):
                f.problem(
                    "lost",
                    f"{case_id}: report versions for opinions {issued}, "
                    f"opinions published {opinion_versions}",
                )
            if doc is not None:
                wanted[case_id] = [f"{doc['report_id']}:v{n}" for n in range(1, len(issued) + 1)]
        # One look-up by `_id` for every version document (a count would read them all).
        every = [vid for ids in wanted.values() for vid in ids]
        stored = {
            d["_id"]
            for d in await self.db("reports")["versions"]
            .find({"_id": {"$in": every}}, {"_id": 1})
            .to_list()
        }
        for case_id, ids in wanted.items():
            if missing := [vid for vid in ids if vid not in stored]:
                f.problem("lost", f"{case_id}: report version documents {missing} missing")

    async def audit_notify(self, by_case: dict[str, list[dict[str, Any]]]) -> None:
        """Notify: one send per notification of the matrix (the patient's and the
        professionals'), all sent, each arrived by its Message-ID; no other Message-ID in the
        run's mailboxes; the ids that arrived more than once counted (and kept)."""
        f = self.figures
        self.mail = mail = read_mailbox(self.tag)
        arrived = Counter[str]()  # Message-ID -> arrivals, in every mailbox of the run
        for box in mail.values():
            arrived.update(box)
        known: set[str] = set()
        docs = await self.db("notify")["cases"].find({"_id": {"$in": list(self.cases)}}).to_list()
        found = {d["_id"]: d for d in docs}
        for case_id in self.cases:
            events = sorted(by_case.get(case_id, []), key=lambda e: e["time"])
            want = expected_templates(events)
            doc = found.get(case_id) or {}
            sends = (
                await self.db("notify")["sends"]
                .find({"_id": {"$in": doc.get("notifications", [])}})
                .to_list()
            )
            got = Counter(s["template"] for s in sends)
            if got != want:
                missing, extra = want - got, got - want
                if missing:
                    f.problem("lost", f"{case_id}: sends missing {dict(missing)}")
                if extra:
                    f.problem("duplicated_effects", f"{case_id}: sends extra {dict(extra)}")
            f.email_failed_attempts += sum(
                a["outcome"] != "sent" for s in sends for a in s.get("attempts", [])
            )
            unsent = [s["_id"] for s in sends if s["status"] != "sent"]
            if unsent:
                f.problem("lost", f"{case_id}: sends not sent {unsent}")
            # The email sends' ids (a FHIR post's id is its `webhook-id`: audit_fhir).
            ids = {s["message_id"] for s in sends if s.get("channel", "email") == "email"}
            known |= ids
            if lost := [i for i in ids if not arrived[i]]:
                f.problem("lost", f"{case_id}: {len(lost)} emails never arrived")
            received = mail.get(self.emails[case_id], Counter())
            if extra_ids := set(received) - ids:
                f.problem("duplicated_effects", f"{case_id}: emails {extra_ids} unknown")
            f.pro_emails += sum(
                1 for s in sends if s["template"].startswith("pro_") and arrived[s["message_id"]]
            )
        patients = set(self.emails.values())
        for to, box in mail.items():
            if to not in patients and (strays := set(box) - known):
                f.problem("duplicated_effects", f"{to}: emails {strays} of no send")
        f.emails = len(arrived)
        f.email_copies = sum(arrived.values()) - len(arrived)
        f.repeated_emails = dict(sorted((k, n) for k, n in arrived.items() if n > 1)[:100])

    def audit_webhooks(self, by_case: dict[str, list[dict[str, Any]]]) -> None:
        """Each partner: one successful signed delivery per event of its cases."""
        f = self.figures
        ok: dict[str, set[str]] = defaultdict(set)
        for h in self.partners.received:
            if h.case_id not in self.cases:
                continue
            if not h.verified:
                f.problem("", f"{h.path}: delivery {h.webhook_id} failed verification")
            if h.status == 204:
                ok[h.path].add(h.webhook_id)
                f.webhook_deliveries += 1
            else:
                f.webhook_failed_attempts += 1
        per_event: dict[tuple[str, str], set[str]] = defaultdict(set)
        delivered = Counter[str]()  # webhook-id -> successful deliveries
        for h in self.partners.received:
            if h.status == 204 and h.verified:
                per_event[(h.path, h.event_id)].add(h.webhook_id)
                if h.case_id in self.cases:
                    delivered[h.webhook_id] += 1
        f.webhook_copies = sum(delivered.values()) - len(delivered)
        f.repeated_webhooks = dict(sorted((k, n) for k, n in delivered.items() if n > 1)[:100])
        for case_id, partner in self.partner_of.items():
            for e in by_case.get(case_id, []):
                if e["type"] not in HOOK_TYPES:
                    continue
                ids = per_event.get((partner, e["id"]), set())
                if not ids:
                    f.problem("lost", f"{case_id}: {partner} never got {e['type']} {e['id']}")
                elif len(ids) > 1:
                    f.problem("duplicated_effects", f"{case_id}: {partner} got {e['id']} {ids}")
        for (partner, eid), _ in per_event.items():
            h = next(x for x in self.partners.received if x.event_id == eid)
            if self.partner_of.get(h.case_id) != partner:
                f.problem("", f"{partner} got {eid} of a case not shared with it")

    async def audit_fhir(self) -> None:
        """The institution's FHIR endpoint: every post a valid document with its `webhook-id`
        (the cases' own copies: mixes.Physician); the ids posted more than once counted; the
        endpoint enabled at the end, no post waiting for it."""
        f = self.figures
        posted = Counter[str]()  # webhook-id -> successful posts
        wrong: dict[str, list[str]] = {}
        for p in self.institution.received:
            if not p.webhook_id:
                f.problem("", f"a FHIR post of {p.document or 'no document'} has no webhook-id")
            if p.violations:
                wrong.setdefault(p.webhook_id, p.violations)
            if p.status < 300:
                posted[p.webhook_id] += 1
            else:
                f.fhir_failed_attempts += 1
        for webhook_id, found in wrong.items():
            f.problem("", f"FHIR post {webhook_id} is no valid document: {found[:3]}")
        f.fhir_posts = sum(posted.values())
        f.fhir_copies = sum(posted.values()) - len(posted)
        f.repeated_fhir = dict(sorted((k, n) for k, n in posted.items() if n > 1)[:100])
        if not any(m.params.get("channel") == "fhir" for m in self.cases.values()):
            return
        coordinator = self.client("notify", f"{self.tag}-coord", "coordinator")
        listed = await retrying(lambda: coordinator.get("/v1/fhir-endpoints"))
        states = listed.json().get("items", []) if listed.status_code == 200 else []
        state = next((e for e in states if e["institution"] == FHIR_INSTITUTION), None)
        if state is None or not state["enabled"] or state["waiting"]:
            f.problem("stuck_cases", f"the FHIR endpoint at the end: {state or listed.status_code}")


def fact_key(e: dict[str, Any]) -> str:
    """What an event states, independent of its id (two ids for one fact is a duplicate)."""
    d: dict[str, Any] = e["data"]
    t = str(e["type"])
    if t in ("avis.case.submitted.v1", "avis.case.withdrawn.v1"):
        return t
    if t in ("avis.review.assigned.v1", "avis.review.accepted.v1", "avis.review.declined.v1"):
        return f"{t}:{d['assignment_id']}"
    # A request, a follow-up, a translation, a reading's version (and its reader, once one
    # fits) or an opinion's: what names the fact.
    keys = (
        "assignment_id",
        "request_id",
        "follow_up_id",
        "translation_id",
        "version",
        "report_version",
        "second_reader_id",
    )
    return ":".join([t, *(str(d.get(k, "")) for k in keys)])


def expected_templates(events: list[dict[str, Any]]) -> Counter[str]:
    """The emails of a case's events (the notification matrix): the patient's, and the
    professionals' (`pro_*`) when the event names one to tell."""
    want = Counter[str]()
    told: Any = None
    once = {
        "avis.case.submitted.v1": "case_received",
        "avis.review.information-requested.v1": "information_requested",
        "avis.review.resumed.v1": "review_resumed",
        "avis.review.follow-up-asked.v1": "follow_up_received",
        "avis.review.follow-up-answered.v1": "follow_up_answered",
    }
    professional = {
        "avis.review.follow-up-asked.v1": "pro_follow_up",
        "avis.review.second-reading-requested.v1": "pro_second_reading",
        "avis.review.second-reading-commented.v1": "pro_comments",
        "avis.review.translation-queued.v1": "pro_translation",
    }
    for e in events:
        if e["type"] in once:
            want[once[e["type"]]] += 1
        if e["type"] in professional and e["data"].get("recipient"):
            want[professional[e["type"]]] += 1
    assigned = sorted(
        (e for e in events if e["type"] == "avis.review.assigned.v1"),
        key=lambda e: e["data"]["assigned_at"],
    )
    abroad = False  # the patient told the review goes abroad, through a translator
    for e in assigned:
        day = datetime.fromisoformat(e["data"]["due_at"]).astimezone(PARIS).date()
        if e["data"].get("international") and not abroad:
            want["review_abroad"] += 1
            abroad = True
        elif told is None:
            want["review_assigned"] += 1
        elif day != told:
            want["expected_date_changed"] += 1
        told = day
    # The report versions notify tells (mixes.told_versions); the treating physician named,
    # with the consent to share: a copy of each.
    submitted = [e for e in events if e["type"] == "avis.case.submitted.v1"]
    named = any(e["data"].get("physician") for e in submitted)
    for n, _ in enumerate(told_versions(events)):
        want["report_updated" if n else "report_ready"] += 1
        if named:
            want["physician_report"] += 1
    return want


# --- helpers ----------------------------------------------------------------------------------


def log(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


async def retrying(call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """Call until the service answers something other than unavailable (it may be restarting,
    or waiting for its store)."""
    delay = 0.3
    while True:
        try:
            answer = await call()
            if answer.status_code not in (502, 503, 504):
                return answer
        except httpx.TransportError:
            pass
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 3.0)


async def partitions(topic: str) -> list[int]:
    return sorted(await partitions_of(KAFKA, topic))


async def read_events(start: dict[TopicPartition, int], topics: tuple[str, ...]) -> list[Any]:
    """Every record of `topics` from the run's start to their current end, decoded."""
    consumer = AIOKafkaConsumer(**KAFKA.options(), group_id=None)
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        tps = [tp for tp in start if tp.topic in topics]
        end = await consumer.end_offsets(tps)
        tps = [tp for tp in tps if end[tp] > start[tp]]
        if not tps:
            return out
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp])
        left = {tp for tp in tps}
        while left:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers}
                    try:
                        data = json.loads(r.value or b"{}")
                    except ValueError:
                        data = {}
                    out.append(
                        {
                            "topic": tp.topic,
                            "id": headers.get("ce_id", ""),
                            "type": headers.get("ce_type", ""),
                            "time": headers.get("ce_time", ""),
                            "case_id": (r.key or b"").decode(errors="replace"),
                            "offset": r.offset,
                            "data": data if isinstance(data, dict) else {},
                        }
                    )
                    if r.offset + 1 >= end[tp]:
                        left.discard(tp)
    finally:
        await consumer.stop()
    return out


async def consumer_lag(start: dict[TopicPartition, int]) -> int:
    """Records the services' consumer groups have not committed yet."""
    lag = 0
    for service, topics in GROUP_TOPICS.items():
        consumer = AIOKafkaConsumer(
            **KAFKA.options(), group_id=f"avis-{service}", enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = [tp for tp in start if tp.topic in topics]
            end = await consumer.end_offsets(tps)
            for tp in tps:
                committed = await consumer.committed(tp) or 0
                lag += max(0, end[tp] - max(committed, start[tp]))
        finally:
            await consumer.stop()
    return lag


def read_mailbox(tag: str) -> dict[str, Counter[str]]:
    """Each of this run's patients' Message-IDs in the sink, with how often each arrived."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for path in MAIL_DIR.glob("*.eml"):
        raw = path.read_bytes()
        if tag.encode() not in raw:
            continue
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        out[str(msg.get("To", "")).strip()][str(msg["Message-ID"]).strip()] += 1
    return out


def stack_env() -> dict[str, str]:
    """The services' settings for the run: the test stack, fast retries, no disabling."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "AVIS_KAFKA_BOOTSTRAP": BOOTSTRAP,
        **kafka_passwords(),
        "AVIS_MONGO_URL": MONGO_URL,
        "AVIS_SMTP_URL": os.environ.get("AVIS_SMTP_URL", "smtp://127.0.0.1:11025"),
        "AVIS_SEALING_KEYS": SEALING_KEYS,
        **kms_env(),
        "AVIS_JWT_SECRET": JWT_SECRET,
        # HS256 tokens: development only; the run's writes are not to be throttled.
        "AVIS_ENV": "development",
        "AVIS_RATE_LIMIT_WRITES": "100000/minute",
        "AVIS_OTEL_EXPORTER": "none",
        "AVIS_LOG_FORMAT": "json",
        "AVIS_RELAY_POLL_SECONDS": "0.5",
        "AVIS_RETRY_BACKOFF_MAX_SECONDS": "2",
        "AVIS_NOTIFY_SENDER_TICK_SECONDS": "0.3",
        "AVIS_NOTIFY_DUE_BUCKET_SECONDS": "2",
        # Emails retried for about three minutes: longer than the sink's failure.
        "AVIS_NOTIFY_RETRY_SCHEDULE": "1,2,3,5,8,13,21,34,55,60",
        "AVIS_NOTIFY_WEBHOOK_ALLOW_HTTP_LOOPBACK": "true",
        "AVIS_NOTIFY_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
        "AVIS_NOTIFY_WEBHOOK_RETRY_MAX_DELAY_SECONDS": "3",
        # The failing partner is not disabled: the run wants every delivery to land.
        "AVIS_NOTIFY_WEBHOOK_DISABLE_AFTER_FAILURES": "0",
        # The later paths' settings (a short expiry of the requests for more information).
        **mix_settings(),
    }


@contextlib.asynccontextmanager
async def chaos_stack(
    plan: Plan,
    logs: Path,
    env: Mapping[str, str] | None = None,
    each: Mapping[str, Mapping[str, str]] | None = None,
) -> AsyncIterator[tuple[ServiceStack, Partners, str, Institution]]:
    """The four services as processes, with databases of their own, the partners and the
    physicians' institution's FHIR endpoint (set in notify; the document it posts is read from
    the reports' first copy, its public address); `env` over the run's settings, `each` over
    one service's."""
    from tests.support.basics import skip_history

    for service, topics in GROUP_TOPICS.items():
        await skip_history(f"avis-{service}", topics)
    run_id = uuid.uuid4().hex[:6]
    databases = {s: f"chaos_{plan.seed}_{run_id}_{s}" for s in GROUP_TOPICS}
    partners, institution = Partners(), Institution()
    instances = dict.fromkeys(GROUP_TOPICS, plan.copies)
    async with serve(partners.app()) as hooks_url, serve(institution.app()) as fhir_url:
        endpoints = {FHIR_INSTITUTION: f"{fhir_url}/fhir/{FHIR_INSTITUTION}"}
        settings = stack_env() | {"AVIS_NOTIFY_PHYSICIAN_FHIR_ENDPOINTS": json.dumps(endpoints)}
        stack = ServiceStack(settings | dict(env or {}), logs, databases, instances=instances)
        stack.env = {"AVIS_REPORTS_PUBLIC_URL": stack.urls["reports"], **stack.env}
        for member in stack.members:
            member.env = dict((each or {}).get(member.service, {}))
        async with stack.running():
            yield stack, partners, hooks_url, institution


async def run(
    plan: Plan,
    logs: Path | None = None,
    probe: Callable[["Run"], Awaitable[None]] | None = None,
    *,
    during: Callable[["Run"], Awaitable[None]] | None = None,
    env: Mapping[str, str] | None = None,
    each: Mapping[str, Mapping[str, str]] | None = None,
) -> Figures:
    """One fault run: file, drive, break, wait for quiet, audit (then `probe`, if given, while
    the stack still runs: a test's check that the audit sees what it should). `during` runs
    beside the filing and the faults (an operator's work while cases flow); `env` goes over
    the services' settings, `each` over one service's."""
    began = time.monotonic()
    # The run's own consumers see the broker go away: that is the point, not news.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="avis-chaos-") as tmp:
        logs = logs or Path(tmp)
        async with chaos_stack(plan, logs, env, each) as (stack, partners, hooks_url, institution):
            chaos = Run(plan, stack, partners, hooks_url, institution)
            try:
                await chaos.setup()
                log(f"run {chaos.tag}: {plan.cases} cases, faults: {len(chaos.faults)}")
                async with stack.supervised():
                    tail = asyncio.create_task(chaos.tail())
                    driver = asyncio.create_task(chaos.drive())
                    try:
                        meanwhile = [] if during is None else [during(chaos)]
                        await asyncio.gather(chaos.file_all(), chaos.inject(), *meanwhile)
                        log("filed every case; faults over; waiting for quiet")
                        await chaos.quiet()
                        await asyncio.gather(*chaos.watching)
                    finally:
                        for task in (tail, driver, *chaos.acting.values(), *chaos.watching):
                            task.cancel()
                        await asyncio.gather(
                            tail,
                            driver,
                            *chaos.acting.values(),
                            *chaos.watching,
                            return_exceptions=True,
                        )
                    log("auditing")
                    async with asyncio.timeout(600):
                        await chaos.audit()
                    if probe is not None:
                        await probe(chaos)
                chaos.figures.service_restarts = stack.restarts
            finally:
                await chaos.close()
            if chaos.figures.problems:
                print(stack.tails(1500))
    chaos.figures.duration_seconds = round(time.monotonic() - began, 1)
    return chaos.figures


def report(figures: Figures) -> str:
    """The figures as the run prints them."""
    f = figures
    lines = [
        f"cases {f.cases}  seed {f.seed}",
        f"kills {sum(f.kills.values())} {f.kills} by moment {f.kills_by_moment}",
        f"service restarts {f.service_restarts}",
        f"broker restarts {f.broker_restarts}  store restarts {f.store_restarts}",
        f"SMTP failing {f.smtp_fail_seconds:.0f} s  partner failing {f.partner_fail_seconds:.0f} s"
        f"  FHIR endpoint failing {f.fhir_fail_seconds:.0f} s",
        f"events published {f.events_published}  republished {f.events_republished}",
        f"declines {f.declines}  corrections {f.corrections}  report versions {f.report_versions}"
        f" (addenda {f.addenda})",
        f"paths {f.paths}",
        f"information requests {f.information_requests} (answered {f.information_answered}, "
        f"expired {f.information_expired})  follow-ups {f.follow_ups_asked} (answered "
        f"{f.follow_ups_answered})  second readings {f.second_readings} (comments "
        f"{f.second_reading_comments})",
        f"translations {f.translations} (under the faults {f.translations_under_faults})  "
        f"reports stating their translation {f.translated_reports}",
        f"physician copies {f.physician_copies}  FHIR posts {f.fhir_posts} ({f.fhir_copies} of "
        f"them copies, {f.fhir_failed_attempts} failed attempts)",
        f"emails {f.emails} (to professionals {f.pro_emails}; +{f.email_copies} copies, "
        f"{f.email_failed_attempts} failed attempts)  webhook deliveries "
        f"{f.webhook_deliveries} ({f.webhook_copies} of them copies, "
        f"{f.webhook_failed_attempts} failed attempts)",
        f"repeated sends: {len(f.repeated_emails)} Message-IDs {f.repeated_emails}, "
        f"{len(f.repeated_webhooks)} webhook-ids {f.repeated_webhooks}, "
        f"{len(f.repeated_fhir)} FHIR webhook-ids {f.repeated_fhir}",
        f"capacity samples {f.capacity_samples}  max load/capacity {f.max_load_ratio:.2f}",
        f"lost {f.lost}  duplicated effects {f.duplicated_effects}  stuck cases {f.stuck_cases}",
        f"dead letters {f.dlq_records}  capacity violations {f.capacity_violations}",
        f"time to quiet {f.time_to_quiet_seconds:.1f} s  duration {f.duration_seconds:.1f} s",
    ]
    for job, seconds in sorted(f.takeovers.items()):
        lines.append(f"take-over {job}: {seconds} s (max {max(seconds):.1f} s)")
    lines += [f"PROBLEM {p}" for p in f.problems]
    return "\n".join(lines)


def write_results(figures: Figures) -> Path:
    """The figures as JSON under .local/chaos/ (not committed)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}-seed{figures.seed}.json"
    path.write_text(json.dumps(asdict(figures), indent=2), encoding="utf-8")
    (RESULTS / "latest.json").write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=int(os.environ.get("CHAOS_CASES", "300")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "1")))
    parser.add_argument(
        "--fault-seconds", type=float, default=float(os.environ.get("CHAOS_FAULT_SECONDS", "300"))
    )
    parser.add_argument("--kills", type=int, default=int(os.environ.get("CHAOS_KILLS", "4")))
    parser.add_argument(
        "--copies",
        type=int,
        default=int(os.environ.get("CHAOS_COPIES", "2")),
        help="copies of each service; a kill takes a lease holder (default 2)",
    )
    parser.add_argument(
        "--reviewers",
        type=int,
        default=int(os.environ.get("CHAOS_REVIEWERS", "0")),
        help="reviewers (default: one per 40 cases, 4 at least)",
    )
    parser.add_argument("--logs", type=Path, default=None, help="keep the services' logs here")
    args = parser.parse_args()
    plan = Plan(
        cases=args.cases,
        seed=args.seed,
        fault_seconds=args.fault_seconds,
        kills_per_service=args.kills,
        copies=args.copies,
        reviewers=args.reviewers or max(4, args.cases // 40),
    )

    async def bounded() -> Figures:
        # The whole run stops by itself: faults, quiet and audit within 28 minutes; a SIGTERM or
        # SIGINT stops it too, and the services with it.
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
        async with asyncio.timeout(28 * 60):
            return await run(plan, args.logs)

    figures = asyncio.run(bounded())
    print(report(figures))
    print(f"figures written to {write_results(figures)}")
    sys.exit(1 if figures.problems else 0)


if __name__ == "__main__":
    main()
