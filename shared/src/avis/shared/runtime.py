"""What every service stands on: logs, traces, its store, its broker, the outbox relay, and the
HTTP doors of DESIGN.md section 5 (`/healthz`, `/readyz`, `/metrics`, `/asyncapi.json`).

A service's `main.py` builds a `Runtime`, registers its handlers and indexes, and asks it for
the FastAPI app. The runtime starts in any order with Kafka and MongoDB: until both answer it
retries with backoff and `/readyz` says not ready. Once connected it keeps watching both: one line
when a dependency goes away, a reminder at a slow pace while it stays away, one when it is back.
"""

import asyncio
import contextlib
import inspect
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import structlog
import uvicorn
from aiokafka.errors import KafkaError
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

from avis.shared.anchors import Anchors
from avis.shared.audit import AuditTrail
from avis.shared.bodies import BodyLimits, bound_bodies
from avis.shared.caching import NoStore
from avis.shared.clock import now
from avis.shared.envelope import Event
from avis.shared.events import EVENT_TYPES, TYPE_OF, Declared, Payload, TrailAnchored, asyncapi
from avis.shared.kafka import Handler, InboxUse, Messaging, make_broker, watch_dlq_depths
from avis.shared.kafka_access import KafkaAccess, refuse_anonymous_in_production
from avis.shared.keys import KeyServiceError
from avis.shared.lease import (
    LEASES,
    SECTIONS,
    Lease,
    Sections,
    holder_id,
    presence_job,
    singleton,
)
from avis.shared.mongo import (
    TRANSIENT_STORE_ERRORS,
    AggregateLocks,
    Document,
    connect,
    ping,
    store_busy,
)
from avis.shared.observability import (
    DEPENDENCY_REACHABLE,
    EVENTS_CONSUMED,
    EVENTS_PUBLISHED,
    HANDLER_SECONDS,
    HttpMetrics,
    SpanBatching,
    StoreRequests,
    configure_logging,
    configure_tracing,
)
from avis.shared.outbox import Relay
from avis.shared.problems import Problem, install_problem_handlers, problem_responses
from avis.shared.ratelimit import WriteLimits, limit_writes
from avis.shared.retention import Calendar
from avis.shared.retry import Backoff
from avis.shared.security import TokenVerifier
from avis.shared.settings import CommonSettings
from avis.shared.tasks import stopped
from avis.shared.topics import AUDIT_ANCHORED

log = structlog.get_logger("avis.runtime")
SettingsT = TypeVar("SettingsT", bound=CommonSettings)
P = TypeVar("P", bound=Payload)
StoreInit = Callable[[AsyncDatabase[Document]], Awaitable[None]]
WATCH_SECONDS = 2.0  # how often a connected service checks Kafka and the store
REMIND_SECONDS = 60.0  # how often it says again that a dependency is still away
DOCS_ASSETS = "/docs-assets"  # Swagger UI's and ReDoc's files, served locally


class Dependency:
    """One dependency's reachability as the operator reads it in the logs: a line when it goes
    away, a reminder every `remind_seconds` while it stays away, a line when it is back."""

    def __init__(self, name: str, remind_seconds: float = REMIND_SECONDS, **context: Any) -> None:
        self.name = name
        self.remind_seconds = remind_seconds
        self.context = context
        self.down_since: float | None = None
        self._reminded = 0.0

    def observe(self, reachable: bool, now: float, **details: Any) -> None:
        """Record one check made at `now` (monotonic seconds); logs only on a change or reminder."""
        if reachable:
            if self.down_since is not None:
                away = round(now - self.down_since, 1)
                log.info(f"{self.name} reachable again", away_s=away, **self.context)
                self.down_since = None
        elif self.down_since is None:
            self.down_since = self._reminded = now
            log.warning(f"{self.name} not reachable", **self.context, **details)
        elif now - self._reminded >= self.remind_seconds:
            self._reminded = now
            away = round(now - self.down_since)
            log.warning(f"{self.name} still not reachable", away_s=away, **self.context, **details)


class Runtime:
    """One service's connections and background work."""

    def __init__(
        self,
        settings: CommonSettings,
        sends: Sequence[Declared] = (),
        *,
        connects: bool = True,
        across_copies: Sequence[str] = (),
        sections_swept_every: float = 0.0,
    ) -> None:
        self.settings = settings
        # False for a service with no store and no broker of its own (the web pages): it never
        # connects, and /readyz answers as soon as the process does.
        self.connects = connects
        if connects:
            refuse_anonymous_in_production(settings)
        self.service = settings.service_name
        # What the service publishes (payload types, or whole topics): its AsyncAPI `send`s.
        self.sends = tuple(sends)
        for declared in self.sends:  # a series born at 1 is never counted by `rate()`: at 0
            if not isinstance(declared, str):
                ce_type = TYPE_OF[declared]
                EVENTS_PUBLISHED.labels(self.service, EVENT_TYPES[ce_type][0], ce_type)
        # The topics it consumes; its AsyncAPI `receive`s are the types registered with `on`
        # (and every type of a topic consumed with `subscribe`).
        self.receives: tuple[str, ...] = ()
        self._raw_topics: list[str] = []
        configure_logging(self.service, settings.log_format, settings.log_level)
        configure_tracing(
            self.service,
            settings.otel_exporter,
            settings.otel_endpoint,
            SpanBatching(
                settings.otel_queue_size, settings.otel_batch_size, settings.otel_delay_ms
            ),
        )
        self.mongo = connect(settings.mongo_url, listeners=[StoreRequests(self.service)])
        self.db: AsyncDatabase[Document] = self.mongo[settings.database]
        self.broker = make_broker(settings)
        self.messaging = Messaging(settings, self.broker, self.db)
        self.holder = holder_id(self.service)
        # One writer per aggregate: within this process, or, for the kinds of aggregate
        # (collections) whose writes reach any copy (`across_copies`), among all the copies
        # through the store (avis.shared.lease.Sections).
        self.locks = (
            Sections(self.db[SECTIONS], self.holder, across_copies, every=sections_swept_every)
            if across_copies
            else AggregateLocks()
        )
        # This copy's presence (a lease held for life), and the lease of the copy that takes
        # over the outboxes of copies that are gone (avis.shared.outbox).
        self.presence = self.lease(presence_job(self.holder))
        self.adoption = self.lease("outbox")
        self.relay = Relay(
            self.service,
            self.messaging.send,
            self.locks,
            poll_seconds=settings.relay_poll_seconds,
            backoff_max=settings.retry_backoff_max_seconds,
            batch=settings.relay_batch,
            writer=self.holder,
            alive=self.alive,
            adopts=self.adoption.holding,
        )
        self.kafka_started = False
        self.store_initialised = False
        self.kafka = Dependency("Kafka", bootstrap=settings.kafka_bootstrap)
        self.store = Dependency("store", database=settings.database)
        self._store_inits: list[StoreInit] = []
        self._background: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Callable[[], Awaitable[None] | None]] = []
        self._handlers: dict[str, Callable[[Event, Any], Awaitable[None]]] = {}
        self._recorded: set[str] = set()  # types whose handler's write records them (`on`)
        self._own: set[str] = set()  # ... and of those, the ones never marked in the inbox

    def on_store(self, init: StoreInit) -> None:
        """Run `init` (indexes, seeds) once the store answers, before consuming or relaying."""
        self._store_inits.append(init)

    def background(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work` once connected, for the life of the service (a periodic job, a gauge)."""
        self._background.append((name, work))

    def on_stop(self, close: Callable[[], Awaitable[None] | None]) -> None:
        """Run `close` when the service stops, once its background work has ended (a client's
        kept connections: the mailer's, the key service's)."""
        self._closers.append(close)

    def anchor(self, trail: AuditTrail) -> None:
        """Anchor the heads of the access trail's chains on Kafka, every
        `AVIS_AUDIT_ANCHOR_SECONDS`, for the life of the service (avis.shared.anchors)."""
        self.sends += (TrailAnchored,)
        EVENTS_PUBLISHED.labels(self.service, AUDIT_ANCHORED, TYPE_OF[TrailAnchored])
        anchors = Anchors(self.service, trail, self.broker)
        self.background("anchors", lambda: anchors.run(self.settings.audit_anchor_seconds))

    def purge(self, calendar: Calendar) -> None:
        """Purge what `calendar` keeps for a set time, hourly, on one copy at a time
        (avis.shared.retention)."""

        async def hourly(_: Lease) -> None:
            while True:
                try:
                    await calendar.sweep(now())
                except PyMongoError as exc:
                    log.warning("nothing purged this time", error=type(exc).__name__)
                await asyncio.sleep(3600)

        self.singleton("retention", hourly)

    def lease(self, job: str) -> Lease:
        """The lease of `job` among this service's copies (one per job)."""
        return Lease(
            self.db[LEASES],
            job,
            holder=self.holder,
            ttl=self.settings.lease_ttl_seconds,
            skew=self.settings.lease_skew_seconds,
        )

    async def alive(self, copy: str) -> bool | None:
        """Whether another copy of this service lives: its presence's term has not expired
        (None: it never claimed one)."""
        _, term = await self.lease(presence_job(copy)).latest()
        if term is None:
            return None
        return not term.expired(now(), self.settings.lease_skew_seconds)

    def singleton(self, name: str, work: Callable[[Lease], Coroutine[Any, Any, None]]) -> None:
        """Run `work` once connected, on one copy of the service at a time: the holder of the
        lease `name` (a periodic job that must run once per period); it gets the lease to
        check its fence before a decision write."""
        lease = self.lease(name)
        self.background(name, lambda: singleton(lease, lambda: work(lease)))

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Consume every event of `topic` with `handler` (prefer `on`, by payload type)."""
        self._raw_topics.append(topic)
        self._subscribe(topic, handler)

    def _subscribe(
        self, topic: str, handler: Handler, inbox_use: Callable[[str], InboxUse] | None = None
    ) -> None:
        self.receives += (topic,)
        self.messaging.subscribe(topic, handler, inbox_use)

    def on(
        self,
        payload_type: type[P],
        handler: Callable[[Event, P], Awaitable[None]],
        *,
        recorded: bool = False,
        marked: bool = True,
    ) -> None:
        """Handle the events of `payload_type` with the idempotent consumer.

        Underneath there is one subscriber per topic, dispatching by `ce_type`: several
        subscribers of one group on one topic would split its partitions between them.
        `recorded`: the handler's own write records the event, and the service's own rule
        turns a redelivery away (intake's timeline), so the inbox is not looked up first
        (`InboxUse.MARK`; its marker is still written after, with others within a second, for
        whoever reads it). `marked=False` with it: nothing reads the marker either, and none is
        written (`InboxUse.OWN`; notify's case events, whose ids the case keeps).
        """
        ce_type = TYPE_OF[payload_type]
        if ce_type in self._handlers:
            raise ValueError(f"{ce_type} already has a handler in {self.service}")
        self._handlers[ce_type] = handler
        if recorded:
            self._recorded.add(ce_type)
            if not marked:
                self._own.add(ce_type)
        topic = EVENT_TYPES[ce_type][0]
        EVENTS_CONSUMED.labels(self.service, topic, ce_type, "applied")  # at 0 from the start
        HANDLER_SECONDS.labels(self.service, topic)
        if topic not in self.receives:
            # The types registered are the ones handled: the others on the topic (another
            # service's concern) are acknowledged without a look-up or marker in the inbox.
            self._subscribe(topic, self._dispatch, self.inbox_use)

    def received(self) -> list[Declared]:
        """What this service consumes: the types registered with `on`, the topics consumed
        whole with `subscribe`."""
        return [*self._raw_topics, *(EVENT_TYPES[t][1] for t in self._handlers)]

    def inbox_use(self, ce_type: str) -> InboxUse:
        """What the inbox does for events of `ce_type` here (see `on`)."""
        if ce_type not in self._handlers:
            return InboxUse.NONE
        if ce_type in self._own:
            return InboxUse.OWN
        return InboxUse.MARK if ce_type in self._recorded else InboxUse.FULL

    async def _dispatch(self, event: Event, payload: Payload) -> None:
        handler = self._handlers.get(event.type)
        if handler is None:
            # Another type of a topic this service reads (skipped before the inbox already).
            return
        await handler(event, payload)

    async def start(self) -> None:
        """Connect in the background; the HTTP doors answer at once."""
        if not self.connects:
            return
        self._tasks.append(asyncio.create_task(self._connect(), name=f"{self.service}-connect"))

    async def _connect(self) -> None:
        retry = Backoff(self.settings.retry_backoff_max_seconds)
        while not self.store_initialised:
            try:
                for init in self._store_inits:
                    await init(self.db)
                self.store_initialised = True
                self.store.observe(True, time.monotonic())
            except PyMongoError as exc:
                delay = retry.next_delay()
                self.store.observe(False, time.monotonic(), error=type(exc).__name__)
                await asyncio.sleep(delay)
        retry = Backoff(self.settings.retry_backoff_max_seconds)
        while not self.kafka_started:
            try:
                await self.broker.start()
                self.kafka_started = True
                self.kafka.observe(True, time.monotonic())
            except (KafkaError, OSError) as exc:
                delay = retry.next_delay()
                self.kafka.observe(False, time.monotonic(), error=type(exc).__name__)
                with contextlib.suppress(Exception):
                    await self.broker.stop()
                await asyncio.sleep(delay)
        log.info(
            "connected", bootstrap=self.settings.kafka_bootstrap, database=self.settings.database
        )
        for lease in (self.presence, self.adoption):
            self._tasks.append(asyncio.create_task(lease.hold(), name=f"lease-{lease.job}"))
        self._tasks.append(asyncio.create_task(self.relay.run(), name=f"{self.service}-relay"))
        inbox = self.lease("inbox")
        self._tasks.append(
            asyncio.create_task(singleton(inbox, self._prune_inbox), name=f"{self.service}-inbox")
        )
        self._tasks.append(asyncio.create_task(self._watch(), name=f"{self.service}-watch"))
        self._tasks.append(
            asyncio.create_task(
                watch_dlq_depths(
                    self.service,
                    KafkaAccess.of(self.settings),
                    self.receives,
                    self.settings.dlq_depth_seconds,
                ),
                name=f"{self.service}-dlq-depth",
            )
        )
        for name, work in self._background:
            self._tasks.append(asyncio.create_task(work(), name=f"{self.service}-{name}"))

    async def _prune_inbox(self) -> None:
        # Hourly, on the holder of the inbox lease; each run costs one listing of collection
        # names and one drop per old day (dropping a bucket twice would change nothing).
        while True:
            try:
                await self.messaging.prune_inbox()
            except PyMongoError as exc:
                log.warning("inbox not pruned this time", error=type(exc).__name__)
            await asyncio.sleep(3600)

    async def _watch(self) -> None:
        """Check both dependencies every few seconds, so the logs say when one goes or returns."""
        while True:
            store_error = await ping(self.db)
            self.store.observe(store_error is None, time.monotonic(), error=store_error)
            kafka_ok = await self.broker.ping(timeout=WATCH_SECONDS)
            self.kafka.observe(kafka_ok, time.monotonic())
            DEPENDENCY_REACHABLE.labels(self.service, "store").set(store_error is None)
            DEPENDENCY_REACHABLE.labels(self.service, "kafka").set(kafka_ok)
            await asyncio.sleep(WATCH_SECONDS)

    async def stop(self) -> None:
        """Stop background work, the broker and the store client."""
        await asyncio.gather(*(stopped(task) for task in self._tasks))
        self._tasks.clear()
        grace = self.settings.shutdown_grace_seconds
        for lanes in self.messaging.lanes:  # records being handled end while consumers are open
            await lanes.close(grace)
        for close in self._closers:
            with contextlib.suppress(Exception):
                closing = close()
                if inspect.isawaitable(closing):
                    await closing
        with contextlib.suppress(Exception):
            await self.messaging.commits.close()  # before the consumers close
        with contextlib.suppress(Exception):
            await self.broker.stop()
        self.kafka_started = False
        await self.messaging.marks.close()  # the inbox markers still held
        if isinstance(self.locks, Sections):
            await self.locks.close()  # the other copies need not wait for what lingers
        await self.mongo.close()

    async def readiness(self) -> dict[str, str]:
        """Each dependency and whether it answers ('ok' or why not)."""
        if not self.connects:
            return {}
        store = await ping(self.db) or ("ok" if self.store_initialised else "initialising")
        if not self.kafka_started:
            kafka = "not connected yet"
        else:
            kafka = "ok" if await self.broker.ping(timeout=2.0) else "broker unreachable"
        return {"store": store, "kafka": kafka}

    def create_app(
        self,
        title: str,
        routers: Sequence[APIRouter] = (),
        description: str = "",
        *,
        body_limits: BodyLimits | None = None,
    ) -> FastAPI:
        """The service's FastAPI app, with the platform's doors and error format; request
        bodies within `body_limits` (default: `http_max_body_bytes` for every route), writes
        within the per-caller rate limit, and every answer kept out of caches."""

        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        # /docs and /redoc with their scripts and styles served by the service itself, so the
        # API docs work where there is no way out to a CDN (a hospital network).
        app = FastAPIOffline(
            title=title,
            description=description,
            version="1.0.0",
            lifespan=lifespan,
            static_url=DOCS_ASSETS,
            # no "valid" badge: Swagger UI would send the spec's URL to an outside validator
            swagger_ui_parameters={"validatorUrl": None},
        )
        app.state.runtime = self
        self._install_doors(app, body_limits)
        app.include_router(self._operations(title))
        for router in routers:
            app.include_router(router)
        FastAPIInstrumentor.instrument_app(
            app,
            excluded_urls=f"healthz,readyz,metrics,{DOCS_ASSETS.strip('/')}",
            # A request is one span: the ASGI layer's own spans for each message received and
            # sent (a quarter of a case's spans) hold nothing the request's span lacks.
            exclude_spans=["receive", "send"],
        )
        return app

    def _install_doors(self, app: FastAPI, body_limits: BodyLimits | None) -> None:
        """Token checks, problem answers, write limits, body guards, HTTP metrics and no-store."""
        verifier = app.state.token_verifier = TokenVerifier.from_settings(self.settings)
        install_problem_handlers(app)
        # Inside the body guards: a throttled write's answer waits for its (bounded) body.
        limit_writes(app, WriteLimits(self.settings.rate_limit_writes), verifier)
        bound_bodies(
            app,
            body_limits or BodyLimits(self.settings.http_max_body_bytes),
            idle=self.settings.http_body_idle_seconds,
            total=self.settings.http_body_total_seconds,
        )
        app.add_middleware(HttpMetrics, service=self.service)
        app.add_middleware(NoStore)  # outermost: every answer, the guards' own too
        for error in TRANSIENT_STORE_ERRORS:
            app.add_exception_handler(error, _store_unavailable)
        app.add_exception_handler(OperationFailure, _store_busy)
        app.add_exception_handler(KeyServiceError, _keys_unavailable)

    def _operations(self, title: str) -> APIRouter:
        """The operations doors: /healthz, /readyz, /metrics and /asyncapi.json."""
        ops = APIRouter(tags=["operations"])

        @ops.get("/healthz", summary="The process is alive")
        async def healthz() -> dict[str, str]:
            return {"status": "ok", "service": self.service}

        @ops.get(
            "/readyz",
            summary="MongoDB and Kafka are reachable",
            responses=problem_responses(503),
        )
        async def readyz() -> dict[str, Any]:
            checks = await self.readiness()
            if any(v != "ok" for v in checks.values()):
                down = ", ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
                raise Problem(503, "not-ready", "Not ready", f"Waiting for {down}.")
            return {"status": "ready", "checks": checks}

        @ops.get("/metrics", summary="Prometheus metrics", response_class=Response)
        async def metrics() -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

        @ops.get("/asyncapi.json", summary="The events this service sends and receives")
        async def asyncapi_doc() -> JSONResponse:
            return JSONResponse(asyncapi(f"{title} events", self.sends, self.received()))

        return ops


def _unavailable(what: str) -> Callable[[Request, Exception], Awaitable[Response]]:
    """The answer to a request that met `what` (the store, the key service) away: 503 with a
    retry hint, never a 500."""
    slug = what.replace(" ", "-")

    async def answer(request: Request, exc: Exception) -> Response:
        log.warning("dependency unavailable during request", what=what, error=type(exc).__name__)
        return Problem(
            503,
            f"{slug}-unavailable",
            "Service Unavailable",
            f"The {what} is not reachable right now; retry later.",
            headers={"Retry-After": "5"},
        ).to_response(request.url.path)

    return answer


_store_unavailable = _unavailable("store")
_keys_unavailable = _unavailable("key service")


async def _store_busy(request: Request, exc: Exception) -> Response:
    """A request the store refused because others held it up: 503 with a short retry hint.
    Any other refusal is a fault of ours and stays one."""
    if not store_busy(exc):
        raise exc
    log.warning("store busy during request", error=type(exc).__name__)
    return Problem(
        503,
        "store-busy",
        "Service Unavailable",
        "The store is busy right now and nothing was changed; retry shortly.",
        headers={"Retry-After": "1"},
    ).to_response(request.url.path)


def serve(create_app: Callable[[SettingsT], FastAPI], settings: SettingsT) -> None:
    """Run a service's app with uvicorn where its settings say (the console scripts), on the
    event loop and HTTP parser they name (the whole process runs on that loop)."""
    fast = settings.http_stack == "uvloop"
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop" if fast else "asyncio",
        http="httptools" if fast else "h11",
        log_level="warning",
        # SIGTERM: requests in flight finish within the grace, or are cancelled; then the
        # lifespan stops the consumers (in-flight handlers get the same grace) and the store.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
    )
