"""Logs (structlog, redacted), traces (OpenTelemetry) and metrics (Prometheus) for every service."""

import logging
import pathlib
import sys
import time
import traceback
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from prometheus_client import Counter, Gauge, Histogram
from pymongo import monitoring
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Keys whose values never reach a log line: direct identifiers, clinical text, secrets.
SENSITIVE_KEYS = frozenset(
    {
        "name", "given_name", "family_name", "full_name", "email", "phone", "birth_date",
        "national_id", "address", "contact", "patient", "clinical_summary", "summary",
        "questions_text", "opinion", "explanation", "notes", "reason_text", "body", "content",
        "filename", "file_name", "token", "authorization", "password", "secret", "sealing_keys",
        "jwt_secret", "plaintext",
    }
)  # fmt: skip
REDACTED = "[redacted]"


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace sensitive values, at any depth, before rendering."""
    for key, value in list(event.items()):
        event[key] = _redact_value(key, value)
    return event


def _redact_value(key: str, value: Any) -> Any:
    if key.lower() in SENSITIVE_KEYS:
        return REDACTED
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value("", v) for v in value]
    return value


def safe_exception(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: an exception as its types and frames, never its message.

    Messages of exceptions raised deep in a library can quote the data being processed.
    """
    exc_info = event.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and exc_info[0] is not None:
        exc: BaseException | None = exc_info[1]
        chain = []
        while exc is not None:
            frames = traceback.extract_tb(exc.__traceback__)
            where = [f"{pathlib.Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames]
            chain.append({"type": type(exc).__name__, "frames": where[-8:]})
            exc = exc.__cause__ or exc.__context__
        event["exception"] = chain
    return event


class _Stderr:
    """Whatever sys.stderr is at the time of writing (tests and servers swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def add_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current span's trace and span ids."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    return event


def configure_logging(service: str, fmt: str = "auto", level: str = "INFO") -> None:
    """JSON off a terminal, console on one; every line carries the service and trace ids."""
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_trace_ids,
            redact,
            safe_exception,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries log through the standard library: keep their noise at warnings.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    # aiokafka logs every failed reconnect (hundreds a second while the broker is away) and an
    # ERROR for a coordinator still loading at start-up, both of which it retries by itself. The
    # runtime reports Kafka's reachability instead (runtime.Dependency); at DEBUG its warnings
    # come back for digging.
    logging.getLogger("aiokafka").setLevel(
        logging.WARNING if level.upper() == "DEBUG" else logging.CRITICAL
    )


def _plain(value: Any) -> Any:
    """An attribute value every exporter can encode: bytes become text (or hex), recursively."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


def _needs_plain(attributes: Mapping[str, Any] | None) -> bool:
    return any(
        isinstance(v, bytes | Mapping)
        or (
            isinstance(v, Sequence)
            and not isinstance(v, str)
            and any(isinstance(i, bytes) for i in v)
        )
        for v in (attributes or {}).values()
    )


def _plain_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: _plain(v) for k, v in (attributes or {}).items()}


def json_safe(span: ReadableSpan) -> ReadableSpan:
    """`span`, or a copy of it whose attributes hold no bytes (FastStream records the Kafka key
    as bytes; the console and Zipkin JSON encoders fail on them and drop the whole batch)."""
    if not (
        _needs_plain(span.attributes)
        or any(_needs_plain(e.attributes) for e in span.events)
        or any(_needs_plain(link.attributes) for link in span.links)
    ):
        return span
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_plain_attributes(span.attributes),
        events=[Event(e.name, _plain_attributes(e.attributes), e.timestamp) for e in span.events],
        links=[trace.Link(link.context, _plain_attributes(link.attributes)) for link in span.links],
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


# Spans ended in this process, and those handed to the exporter by what it answered: after a
# flush, ended - exported is what the batch processor dropped (its queue full) or still holds.
SPANS_ENDED = Counter("avis_spans_ended_total", "Spans ended in this process", ["service"])
SPANS_EXPORTED = Counter(
    "avis_spans_exported_total",
    "Spans handed to the trace exporter, by its answer (success, failure)",
    ["service", "outcome"],
)


class CountEnded(SpanProcessor):
    """Counts the spans ended (`avis_spans_ended_total`): what a case costs in spans."""

    def __init__(self, service: str) -> None:
        self.ended = SPANS_ENDED.labels(service)

    def on_end(self, span: ReadableSpan) -> None:
        """One more span ended."""
        self.ended.inc()


class JsonSafeExporter(SpanExporter):
    """Hands every span to `inner` in a form any encoder accepts, so no batch is dropped."""

    def __init__(self, inner: SpanExporter, service: str = "") -> None:
        self.inner = inner
        self.service = service

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export the spans, made JSON-safe; count them by the exporter's answer."""
        result = self.inner.export([json_safe(s) for s in spans])
        outcome = "success" if result is SpanExportResult.SUCCESS else "failure"
        SPANS_EXPORTED.labels(self.service, outcome).inc(len(spans))
        return result

    def shutdown(self) -> None:
        """Shut the inner exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the inner exporter."""
        return self.inner.force_flush(timeout_millis)


def span_exporter(exporter: str, endpoint: str = "", service: str = "") -> SpanExporter | None:
    """The exporter the settings name: `otlp` (OTLP/HTTP base URL), `zipkin` (Zipkin base URL,
    spans posted to /api/v2/spans), `console`, or None for `none`."""
    inner: SpanExporter
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        inner = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces" if endpoint else None)
    elif exporter == "zipkin":
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        base = endpoint.rstrip("/") or "http://127.0.0.1:9411"
        inner = ZipkinExporter(endpoint=f"{base}/api/v2/spans")
    elif exporter == "console":
        inner = ConsoleSpanExporter(out=sys.stderr)
    elif exporter == "none":
        return None
    else:
        raise ValueError(
            f"AVIS_OTEL_EXPORTER must be none, console, otlp or zipkin; got {exporter!r}"
        )
    return JsonSafeExporter(inner, service)


@dataclass(frozen=True)
class SpanBatching:
    """How the batch processor holds and sends ended spans (the AVIS_OTEL_* settings; why these
    defaults: bench/README.md, "What tracing costs")."""

    # Spans held for export; a span ended while it is full is dropped, and its trace broken.
    queue_size: int = 8192
    batch_size: int = 512  # spans per export request; a full batch goes at once
    delay_ms: int = 5000  # the longest a span waits while fewer than a batch are held


def tracer_provider(
    service: str,
    exporter: str = "none",
    endpoint: str = "",
    batching: SpanBatching = SpanBatching(),
) -> TracerProvider:
    """A provider whose spans are counted and, with an exporter, batched to it."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"avis-{service}"}))
    provider.add_span_processor(CountEnded(service))
    chosen = span_exporter(exporter, endpoint, service)
    if chosen is not None:
        provider.add_span_processor(
            BatchSpanProcessor(
                chosen,
                max_queue_size=batching.queue_size,
                max_export_batch_size=batching.batch_size,
                schedule_delay_millis=batching.delay_ms,
            )
        )
    return provider


def configure_tracing(
    service: str,
    exporter: str = "none",
    endpoint: str = "",
    batching: SpanBatching = SpanBatching(),
) -> TracerProvider:
    """Install the tracer provider: OTLP/HTTP or Zipkin when configured, console, or ids only."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        # A second app in one process (tests) shares the first provider: OpenTelemetry
        # allows setting it once.
        return current
    provider = tracer_provider(service, exporter, endpoint, batching)
    trace.set_tracer_provider(provider)
    return provider


def current_traceparent() -> dict[str, str]:
    """The W3C trace context of the current span, as headers to store or send."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def trace_id_of(traceparent: str) -> str:
    """The trace id inside a W3C traceparent value ('' if malformed)."""
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else ""


EVENTS_CONSUMED = Counter(
    "avis_events_consumed_total",
    "Events whose effect was stored",
    ["service", "topic", "type", "outcome"],
)
EVENTS_FAILED = Counter(
    "avis_events_failed_total", "Handler attempts that failed", ["service", "topic", "kind"]
)
EVENTS_DEAD_LETTERED = Counter(
    "avis_events_dead_lettered_total", "Events sent to a dead-letter topic", ["service", "topic"]
)
EVENTS_PUBLISHED = Counter(
    "avis_events_published_total", "Events acknowledged by the broker", ["service", "topic", "type"]
)
OUTBOX_BACKLOG = Gauge("avis_outbox_backlog", "Events waiting in the outbox", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "avis_outbox_oldest_age_seconds", "Age of the oldest unpublished event", ["service"]
)
DLQ_DEPTH = Gauge(
    "avis_dlq_depth",
    "Dead letters not yet replayed (end offset minus the replay group's committed offset)",
    ["service", "topic"],
)
HANDLER_SECONDS = Histogram(
    "avis_handler_seconds", "Time to process one event", ["service", "topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip

HTTP_REQUESTS = Counter(
    "avis_http_requests_total", "HTTP requests answered", ["service", "method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "avis_http_request_seconds", "Time to answer one HTTP request", ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
WEBHOOK_PARTNER_ATTEMPTS = Counter(
    "avis_webhook_partner_attempts_total",
    "Webhook delivery attempts by partner and outcome (sent, transient, permanent)",
    ["partner", "outcome"],
)
# A case's way between two stages, observed where the later stage happens from the earlier
# stage's time: a few seconds in tests, days in production.
STAGES = ("submitted_to_assigned", "assigned_to_completed", "completed_to_report_ready",
          "report_ready_to_notified")  # fmt: skip
STAGE_SECONDS = Histogram(
    "avis_stage_seconds", "Time from one stage of a case to the next", ["stage"],
    buckets=(0.25, 1, 5, 30, 120, 600, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400),
)  # fmt: skip
for _stage in STAGES:
    # Exported at 0 from the start: a series that first appears at 1 is not counted by rate().
    STAGE_SECONDS.labels(_stage)
STORE_REQUESTS = Counter(
    "avis_store_requests_total",
    "Commands sent to the store, by kind (data, outbox, hint, inbox, lease, audit) and op",
    ["service", "kind", "op"],
)
DEPENDENCY_REACHABLE = Gauge(
    "avis_service_dependency_up",
    "1 when the service reached the dependency at its last check, else 0",
    ["service", "dependency"],
)


def stage_reached(stage: str, *, since: datetime, at: datetime) -> None:
    """Count a case reaching `stage` (one of STAGES) at `at`, the stage before it at `since`."""
    assert stage in STAGES, stage
    STAGE_SECONDS.labels(stage).observe(max(0.0, (at - since).total_seconds()))


class HttpMetrics:
    """ASGI middleware: every request's count and time by route template (never the raw path,
    whose ids would make a series per case), method and status."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes is answered 500 further out

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = str(scope.get("method", ""))
            HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()
            HTTP_SECONDS.labels(self.service, method, route).observe(time.perf_counter() - started)


@contextmanager
def case_span(name: str, case_traceparent: str) -> Iterator[trace.Span]:
    """A span in the case's trace, linked to the span (an HTTP request, an event) that caused it.

    Events written inside it carry the case's trace, so later work joins the case's trace.
    Without a stored trace context (a new case), the current trace becomes the case's.
    """
    cause = trace.get_current_span().get_span_context()
    parent = propagate.extract({"traceparent": case_traceparent}) if case_traceparent else None
    links = [trace.Link(cause)] if cause.is_valid and parent is not None else []
    tracer = trace.get_tracer("avis")
    with tracer.start_as_current_span(name, context=parent, links=links) as span:
        yield span


# What a command does, by its name (the rest, e.g. `ping` or `listCollections`: "other").
STORE_OPS = {"find": "read", "getMore": "read", "count": "read", "aggregate": "read",
             "insert": "write", "update": "write", "delete": "write", "findAndModify": "write",
             "drop": "write"}  # fmt: skip
OUTBOX_MARK = "outbox"  # the `comment` of the relay's marks on an aggregate: outbox traffic


def store_kind(collection: str, comment: object = None) -> str:
    """The kind of store traffic a command on `collection` is (for `avis_store_requests_total`)."""
    if comment == OUTBOX_MARK:
        return "outbox"
    if collection == "outbox_hints":
        return "hint"
    if collection.startswith("inbox_"):
        return "inbox"
    if collection == "leases":
        return "lease"
    if collection == "sections":
        return "section"
    if collection.startswith("audit_"):
        return "audit"
    return "data"


class StoreRequests(monitoring.CommandListener):
    """Counts every command a service sends to the store, by kind and op: what a case costs
    the store, measured where it is spent (the benchmark reads it per case)."""

    def __init__(self, service: str) -> None:
        self.service = service

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        target = event.command.get(name)
        kind = store_kind(target if isinstance(target, str) else "", event.command.get("comment"))
        STORE_REQUESTS.labels(self.service, kind, STORE_OPS.get(name, "other")).inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Counted when sent."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Counted when sent."""
