"""The whole journey under load: the four services as processes, a driver that files cases and
plays every reviewer, and a probe that times each step from the events on the topics.

One `JourneyStack` is one configuration of the services (tracing, keyring, tuning, copies);
`JourneyStack.round(n)` submits `n` cases as fast as the filers go and waits (up to a deadline)
until each has its report, the patient's emails and the partner's webhook. Times:
  - the driver's own clock when it sends a submission and an opinion;
  - each event's Kafka timestamp (set by the producing service when it publishes), read by a
    consumer of the bench's own on all four topics;
  - the SMTP sink's file time of each email; the webhook receiver's clock at each delivery.
All on one machine, one clock.
"""

import asyncio
import contextlib
import email.parser
import email.policy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI, Request, Response
from prometheus_client.parser import text_string_to_metric_families

from avis.shared.kafka import partitions_of
from avis.shared.kafka_access import KafkaAccess
from avis.shared.sealing import generate_key
from avis.shared.topics import CASE_SUBMITTED, REPORT_READY, REVIEW_ASSIGNED, REVIEW_COMPLETED
from tests.support.basics import kafka_passwords, serve, skip_history
from tests.support.samples import OPINION, case_body, consent_body, pdf, upload
from tests.support.stack import ROOT, SERVICES, ServiceStack, cpu_seconds, peak_rss_mib

BOOTSTRAP = os.environ.get("AVIS_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
# The benchmark's own clients connect as the broker's administrator (deploy/local/test.sh).
KAFKA = KafkaAccess.admin(BOOTSTRAP)
# The bench broker's listener without identities (benchmarks only; "" when not opened).
PLAINTEXT_PORT = os.environ.get("AVIS_KAFKA_BENCH_PLAINTEXT_PORT", "")
PLAINTEXT_BOOTSTRAP = f"127.0.0.1:{PLAINTEXT_PORT}" if PLAINTEXT_PORT else ""
MONGO_URL = os.environ.get("AVIS_MONGO_URL", "mongodb://127.0.0.1:17117")
SMTP_URL = os.environ.get("AVIS_SMTP_URL", "smtp://127.0.0.1:11025")
STATE = Path(os.environ.get("AVIS_STATE_DIR", ROOT / ".local/test"))
MAIL_DIR = STATE / "smtp" / "mail"
PORT_PREFIX = os.environ.get("AVIS_KAFKA_PORT", "19092")[0]
ZIPKIN_PORT = int(f"{PORT_PREFIX}9411")
JWT_SECRET = "bench-" + "x" * 40
TOPICS = (CASE_SUBMITTED, REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY)
GROUP_TOPICS = {
    "intake": [REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY],
    "review": [CASE_SUBMITTED],
    "reports": [CASE_SUBMITTED, REVIEW_COMPLETED],
    "notify": [CASE_SUBMITTED, REVIEW_ASSIGNED, REPORT_READY],
}
HOOK_TYPES = ["avis.case.submitted.v1", "avis.review.assigned.v1", "avis.report.ready.v1"]
EMAILS_PER_CASE = 3  # case received, review assigned, report ready
SUBMITTED, ASSIGNED = "avis.case.submitted.v1", "avis.review.assigned.v1"
COMPLETED, READY = "avis.review.completed.v1", "avis.report.ready.v1"
# The stages, in the journey's order: (name, from, to).
STAGES = [
    ("submit>case-submitted", "submit_sent", SUBMITTED),
    ("case-submitted>review-assigned", SUBMITTED, ASSIGNED),
    ("opinion>review-completed", "opinion_sent", COMPLETED),
    ("review-completed>report-ready", COMPLETED, READY),
    ("report-ready>email", READY, "email"),
    ("report-ready>webhook", READY, "webhook"),
    ("submit>report-ready", "submit_sent", READY),
    ("submit>notified", "submit_sent", "notified"),
]
# Tuned values for the layer-cost run (defaults: relay batch 100, one consumer per topic).
TUNED = {"AVIS_RELAY_BATCH": "500", "AVIS_CONSUMER_WORKERS": "3"}
# The processes beside the services whose pids their scripts record in the state folder: the
# broker, the store, the SMTP sink, the trace backend and the key server (deploy/kms/install.sh).
INFRA = ("kafka", "ferretdb", "smtp", "zipkin", "kms")


def bench_env() -> dict[str, str]:
    """What the services of every benchmark run with: the test stack's broker and store, a
    sealing key of their own, the bench's development tokens, no write rate limit (the load is
    the point) and quiet JSON logs."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "AVIS_KAFKA_BOOTSTRAP": BOOTSTRAP,
        **kafka_passwords(),
        "AVIS_MONGO_URL": MONGO_URL,
        "AVIS_SEALING_KEYS": f"k1:{generate_key()}",
        "AVIS_JWT_SECRET": JWT_SECRET,
        # HS256 tokens: development only.
        "AVIS_ENV": "development",
        "AVIS_RATE_LIMIT_WRITES": "100000/minute",
        "AVIS_LOG_LEVEL": "WARNING",
        "AVIS_LOG_FORMAT": "json",
        # The test stack's key server and each service's certificate there: a key per case.
        **{k: v for k, v in os.environ.items() if k.startswith("AVIS_") and "_KMS_" in k},
    }


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def infra_pids() -> dict[str, int]:
    """The pids `deploy/local/infra.sh` (and the trace backend's script) recorded."""
    pids = {}
    for name in INFRA:
        with contextlib.suppress(OSError, ValueError):
            pid = int((STATE / f"{name}.pid").read_text().strip())
            if Path(f"/proc/{pid}").exists():
                pids[name] = pid
    return pids


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class Variant:
    """One configuration of the services."""

    name: str
    tracing: bool = False
    null_keyring: bool = False
    tuned: bool = False
    # The access trail records nothing (`bench/launch.py --no-trail`).
    no_trail: bool = False
    # The services reach the broker on its listener without identities (`make bench` opens one
    # on the bench's broker only, AVIS_KAFKA_BENCH_PLAINTEXT_PORT), instead of SASL/SCRAM.
    sasl_off: bool = False
    # No key server: every case sealed under the services' keyring, as before per-case keys.
    service_keyring: bool = False
    # Copies of a service, in one consumer group and one database (the others at one), e.g.
    # {"review": 3}.
    copies: dict[str, int] = field(default_factory=dict)
    # A directory where review's launcher writes the time spent waiting for and inside the
    # matcher's section, one file per process (`bench/launch.py --sections`); "" for none.
    sections: str = ""


@dataclass
class Hooks:
    """The partner's webhook receiver: the time each event's delivery arrived."""

    arrived: dict[tuple[str, str], float] = field(default_factory=dict)
    count: int = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            now = time.time()
            body = json.loads(await request.body())
            self.count += 1
            self.arrived.setdefault((body["subject"], body["type"]), now)
            return Response(status_code=204)

        return app


class Probe:
    """A consumer of the bench's own on the four topics: the first time each case's event of
    each type was published, and the trace ids they carried. Calls `on_assigned` with each new
    assignment's payload."""

    def __init__(self, on_assigned: Callable[[dict[str, Any]], None]) -> None:
        self.on_assigned = on_assigned
        self.times: dict[str, dict[str, float]] = {}
        # The trace ids each case's events carried (one, when the case's trace is kept whole).
        self.traces: dict[str, set[str]] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(**KAFKA.options(), enable_auto_commit=False)
        await self.consumer.start()
        tps = [TopicPartition(t, p) for t in TOPICS for p in await partitions_of(KAFKA, t)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self.consumer is not None
        while True:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=500)
            for records in batch.values():
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers}
                    ce_type, subject = headers.get("ce_type", ""), headers.get("ce_subject", "")
                    seen = self.times.setdefault(subject, {})
                    parent = headers.get("traceparent", "").split("-")
                    if len(parent) == 4:
                        self.traces.setdefault(subject, set()).add(parent[1])
                    if ce_type not in seen:
                        seen[ce_type] = r.timestamp / 1000
                        if ce_type == ASSIGNED:
                            self.on_assigned(json.loads(r.value or b"{}"))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.consumer is not None:
            await self.consumer.stop()


class Mail:
    """The SMTP sink's files, read incrementally: when each address got each email."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.by_address: dict[str, list[float]] = {}
        self.parser = email.parser.BytesHeaderParser(policy=email.policy.default)

    def scan(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(MAIL_DIR):
                if entry.name in self.seen or not entry.name.endswith(".eml"):
                    continue
                self.seen.add(entry.name)
                with open(entry.path, "rb") as f:
                    headers = self.parser.parse(f)
                to = str(headers.get("To", "")).strip().lower()
                self.by_address.setdefault(to, []).append(entry.stat().st_mtime)


@dataclass
class Case:
    index: int
    email: str
    case_id: str = ""
    submit_sent: float = 0.0
    opinion_sent: float = 0.0
    error: str = ""


async def store_requests(stack: ServiceStack, services: Any) -> dict[str, dict[str, float]]:
    """The store commands each of `services` has sent so far (all its copies), by kind: its
    `avis_store_requests_total`, reads and writes of its own data apart (pings left out)."""
    totals: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(timeout=10.0) as http:
        for service in services:
            counts = totals.setdefault(service, {})
            for member in stack.of(service):
                text = (await http.get(f"{member.url}/metrics")).text
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        if sample.name != "avis_store_requests_total":
                            continue
                        kind, op = sample.labels["kind"], sample.labels["op"]
                        if op == "other":
                            continue
                        key = f"{kind} {op}" if kind == "data" else kind
                        counts[key] = counts.get(key, 0.0) + sample.value
    return totals


class JourneyStack:
    """The four services in one configuration, with the partner's receiver and the probe."""

    def __init__(self, variant: Variant, filers: int = 8, reviewers: int = 8) -> None:
        self.variant = variant
        self.filers = filers
        self.reviewers = [f"rev-{uuid.uuid4().hex[:6]}-{i}" for i in range(reviewers)]
        self.tag = f"{variant.name}{uuid.uuid4().hex[:4]}".replace("-", "")
        self.partner = f"insurer-{self.tag}"
        self.hooks = Hooks()
        self.mail = Mail()
        self.cases: dict[str, Case] = {}
        self.reactions: set[asyncio.Task[None]] = set()
        self.reviewer_clients: dict[str, httpx.AsyncClient] = {}
        self.reviewer_gate = asyncio.Semaphore(filers)
        self.errors: list[str] = []
        # Opinions sent before the filer had the submission's answer (the probe was faster).
        self.early_opinions: dict[str, float] = {}
        self.stack: ServiceStack | None = None

    def env(self, hooks_url: str) -> dict[str, str]:
        env = bench_env() | {
            "AVIS_SMTP_URL": SMTP_URL,
            "AVIS_OTEL_EXPORTER": "none",
            # The partner's receiver is on loopback, over plain HTTP: development only.
            "AVIS_NOTIFY_WEBHOOK_ALLOW_HTTP_LOOPBACK": "true",
        }
        if self.variant.tracing:
            env["AVIS_OTEL_EXPORTER"] = "zipkin"
            env["AVIS_OTEL_ENDPOINT"] = f"http://127.0.0.1:{ZIPKIN_PORT}"
        if self.variant.tuned:
            env |= TUNED
        if self.variant.service_keyring:
            env.pop("AVIS_KMS_URL", None)
        if self.variant.sasl_off:
            env = {k: v for k, v in env.items() if not k.endswith("_KAFKA_PASSWORD")}
            env["AVIS_KAFKA_BOOTSTRAP"] = PLAINTEXT_BOOTSTRAP
        return env

    def command(self, service: str) -> list[str]:
        launcher = [sys.executable, str(ROOT / "bench/launch.py"), service]
        if self.variant.sections and service == "review":
            launcher += ["--sections", self.variant.sections]
        launcher += ["--null-keyring"] if self.variant.null_keyring else []
        return launcher + (["--no-trail"] if self.variant.no_trail else [])

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["JourneyStack"]:
        for service, topics in GROUP_TOPICS.items():
            await skip_history(f"avis-{service}", topics)
        async with serve(self.hooks.app()) as hooks_url:
            databases = {s: f"bench_{self.tag}_{s}" for s in GROUP_TOPICS}
            with tempfile.TemporaryDirectory(prefix="avis-bench-") as logs:
                self.stack = ServiceStack(
                    self.env(hooks_url),
                    Path(logs),
                    databases,
                    instances=self.variant.copies,
                    command=self.command,
                    ready_timeout=240.0,
                )
                probe = Probe(self.react)
                try:
                    async with self.stack.running():
                        await self.setup(hooks_url)
                        await probe.start()
                        self.probe = probe
                        yield self
                finally:
                    await probe.stop()
                    for client in self.reviewer_clients.values():
                        await client.aclose()
                    await self.drop(databases.values())

    async def drop(self, databases: Any) -> None:
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient[Any] = AsyncMongoClient(MONGO_URL)
        try:
            for name in databases:
                with contextlib.suppress(Exception):
                    await client.drop_database(name)
        finally:
            await client.close()

    async def setup(self, hooks_url: str) -> None:
        """The reviewers of the specialty, and the partner's webhook subscription."""
        assert self.stack is not None
        async with self.stack.client("review", "coord-bench", "coordinator") as coordinator:
            for rid in self.reviewers:
                added = await coordinator.post(
                    "/v1/reviewers",
                    json={
                        "id": rid,
                        "display_name": f"Reviewer {rid}",
                        "specialties": ["oncology"],
                        "languages": ["fr", "en"],
                        "institution_code": "HOSP-BENCH",
                        "capacity": 100,
                    },
                )
                added.raise_for_status()
                self.reviewer_clients[rid] = self.stack.client("review", rid, "reviewer")
        async with self.stack.client("notify", f"{self.partner}-api", "partner", self.partner) as p:
            created = await p.post(
                "/v1/subscriptions", json={"url": f"{hooks_url}/hook", "event_types": HOOK_TYPES}
            )
            created.raise_for_status()

    def react(self, assigned: dict[str, Any]) -> None:
        """An assignment appeared: its reviewer accepts and answers at once."""
        task = asyncio.create_task(self.review(assigned))
        self.reactions.add(task)
        task.add_done_callback(self.reactions.discard)

    async def review(self, assigned: dict[str, Any]) -> None:
        client = self.reviewer_clients.get(assigned.get("reviewer_id", ""))
        case = self.cases.get(assigned.get("case_id", ""))
        if client is None:
            return
        url = f"/v1/assignments/{assigned['assignment_id']}"
        async with self.reviewer_gate:
            try:
                accepted = await client.post(f"{url}/accept")
                accepted.raise_for_status()
                sent = time.time()
                answered = await client.post(f"{url}/opinion", json=OPINION)
                answered.raise_for_status()
                if case is not None:
                    case.opinion_sent = sent
                else:  # the probe saw the assignment before the filer saw its submit answer
                    self.early_opinions[assigned["case_id"]] = sent
            except httpx.HTTPError as exc:
                self.errors.append(f"review: {type(exc).__name__} {exc}"[:200])

    async def file(self, http: httpx.AsyncClient, case: Case) -> None:
        body = case_body(specialty="oncology", partner_reference=f"B-{case.index}")
        body["patient"] = {**body["patient"], "email": case.email, "preferred_language": "fr"}
        try:
            draft = await http.post("/v1/cases", json=body)
            draft.raise_for_status()
            case.case_id = draft.json()["case_id"]
            stored = await http.post(f"/v1/cases/{case.case_id}/documents", **upload(pdf()))
            stored.raise_for_status()
            self.cases[case.case_id] = case
            case.submit_sent = time.time()
            submitted = await http.post(
                f"/v1/cases/{case.case_id}/submit",
                json=consent_body("review", "share_with_partner"),
            )
            submitted.raise_for_status()
        except (httpx.HTTPError, KeyError) as exc:
            case.error = f"{type(exc).__name__} {exc}"[:200]
            self.errors.append(f"file: {case.error}")

    def done(self, case: Case) -> bool:
        times = self.probe.times.get(case.case_id, {})
        return (
            READY in times
            and (case.case_id, READY) in self.hooks.arrived
            and len(self.mail.by_address.get(case.email, [])) >= EMAILS_PER_CASE
        )

    async def round(self, n: int, deadline_s: float) -> dict[str, Any]:
        """Submit `n` cases and wait until each is through, or the deadline passes."""
        assert self.stack is not None
        label = uuid.uuid4().hex[:6]
        cases = [Case(i, f"b-{self.tag}-{label}-{i}@exemple.fr") for i in range(n)]
        queue: asyncio.Queue[Case] = asyncio.Queue()
        for c in cases:
            queue.put_nowait(c)
        before = self.usage()
        requests_before = await self.store_requests()
        self_cpu = resource.getrusage(resource.RUSAGE_SELF)
        load_before = load_average()
        started = time.time()

        async def filer() -> None:
            async with self.stack.client(  # type: ignore[union-attr]
                "intake", f"{self.partner}-api", "partner", self.partner
            ) as http:
                while not queue.empty():
                    await self.file(http, queue.get_nowait())

        filers = [asyncio.create_task(filer()) for _ in range(self.filers)]
        deadline = started + deadline_s
        timed_out = False
        while True:
            await asyncio.sleep(1.0)
            self.mail.scan()
            filed = all(f.done() for f in filers)
            if filed and all(c.error or self.done(c) for c in cases):
                break
            if time.time() > deadline:
                timed_out = True
                break
        for f in filers:
            f.cancel()
        for c in cases:
            if not c.opinion_sent and c.case_id in self.early_opinions:
                c.opinion_sent = self.early_opinions.pop(c.case_id)
        after = self.usage()
        self_after = resource.getrusage(resource.RUSAGE_SELF)
        figures = self.figures(cases, started)
        figures["store_requests_per_case"] = per_case(
            requests_before, await self.store_requests(), figures["report_ready"]
        )
        figures["timed_out"] = timed_out
        figures["deadline_s"] = deadline_s
        figures["errors"] = self.errors[:10]
        figures["error_count"] = len(self.errors)
        self.errors = []
        figures["load_average"] = {"before": load_before, "after": load_average()}
        figures["processes"] = {
            name: {
                "cpu_s": round(after[name]["cpu_s"] - before.get(name, {}).get("cpu_s", 0.0), 2),
                "peak_mib": after[name]["peak_mib"],
            }
            for name in after
        }
        figures["processes"]["bench-driver"] = {
            "cpu_s": round(
                self_after.ru_utime + self_after.ru_stime - self_cpu.ru_utime - self_cpu.ru_stime,
                2,
            ),
            "peak_mib": round(self_after.ru_maxrss / 1024, 1),
        }
        return figures

    async def store_requests(self) -> dict[str, dict[str, float]]:
        """The store commands each service has sent so far (`store_requests`)."""
        assert self.stack is not None
        return await store_requests(self.stack, SERVICES)

    def usage(self) -> dict[str, dict[str, float]]:
        """CPU seconds so far and peak memory of every service instance and infra process."""
        assert self.stack is not None
        figures = self.stack.usage()
        for name, pid in infra_pids().items():
            figures[name] = {"cpu_s": cpu_seconds(pid), "peak_mib": round(peak_rss_mib(pid), 1)}
        return figures

    def figures(self, cases: list[Case], started: float) -> dict[str, Any]:
        points: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
        ready_at: list[float] = []
        notified_at: list[float] = []
        for c in cases:
            if c.error or not c.case_id:
                continue
            t: dict[str, float] = dict(self.probe.times.get(c.case_id, {}))
            t["submit_sent"], t["opinion_sent"] = c.submit_sent, c.opinion_sent
            mails = sorted(self.mail.by_address.get(c.email, []))
            if len(mails) >= EMAILS_PER_CASE:
                t["email"] = mails[-1]
            if (c.case_id, READY) in self.hooks.arrived:
                t["webhook"] = self.hooks.arrived[(c.case_id, READY)]
            if "email" in t and "webhook" in t:
                t["notified"] = max(t["email"], t["webhook"])
                notified_at.append(t["notified"] - started)
            if READY in t:
                ready_at.append(t[READY] - started)
            for name, a, b in STAGES:
                if t.get(a) and t.get(b):
                    points[name].append(t[b] - t[a])
        stages = {
            name: {
                "n": len(v),
                **{f"p{q}_ms": round(pct(v, q) * 1000, 1) for q in (50, 95, 99)},
                "max_ms": round(max(v) * 1000, 1) if v else float("nan"),
            }
            for name, v in points.items()
        }
        ready_at.sort()
        notified_at.sort()
        return {
            "variant": self.variant.name,
            "cases": len(cases),
            "filed": sum(1 for c in cases if c.case_id and not c.error),
            "report_ready": len(ready_at),
            "notified": len(notified_at),
            # Sustained rate: cases through, over the time from the first submission to the
            # last of them through.
            "cases_per_s_report_ready": round(len(ready_at) / ready_at[-1], 3) if ready_at else 0,
            "cases_per_s_notified": round(len(notified_at) / notified_at[-1], 3)
            if notified_at
            else 0,
            "seconds": round(max(ready_at + notified_at, default=0.0), 1),
            "stages": stages,
            "samples": {k: [round(x, 4) for x in v] for k, v in points.items()},
            "ready_at": [round(x, 3) for x in ready_at],
            "notified_at": [round(x, 3) for x in notified_at],
        }


def per_case(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], cases: int
) -> dict[str, dict[str, float]]:
    """Store commands per case through, by service and kind, with each service's total."""
    out: dict[str, dict[str, float]] = {}
    for service, counts in after.items():
        spent = {k: v - before.get(service, {}).get(k, 0.0) for k, v in sorted(counts.items())}
        row = {k: round(v / cases, 1) for k, v in spent.items() if v} if cases else {}
        out[service] = row | {"total": round(sum(row.values()), 1)}
    return out


@contextlib.contextmanager
def zipkin() -> Any:
    """The local trace backend (Zipkin, in memory) on the stack's own port, for one block."""
    script = ROOT / "deploy/tracing/install.sh"
    env = os.environ | {"AVIS_ZIPKIN_PORT": str(ZIPKIN_PORT), "AVIS_STATE_DIR": str(STATE)}
    subprocess.run([str(script), "start"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(f"http://127.0.0.1:{ZIPKIN_PORT}/health", timeout=2)
                if health.status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("Zipkin did not start in 180 s")
            time.sleep(1.0)
        yield f"http://127.0.0.1:{ZIPKIN_PORT}"
    finally:
        subprocess.run([str(script), "stop"], env=env, check=False, stdout=subprocess.DEVNULL)


def zipkin_span_count() -> int:
    """How many traces Zipkin holds (proof the exporter sent something)."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        answer = httpx.get(f"http://127.0.0.1:{ZIPKIN_PORT}/api/v2/services", timeout=5).json()
        return len(answer)
    return -1
