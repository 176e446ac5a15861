"""Log redaction: sensitive keys never reach a rendered line."""

import io
import json

import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from avis.shared.observability import (
    SPANS_ENDED,
    SPANS_EXPORTED,
    CountEnded,
    JsonSafeExporter,
    SpanBatching,
    configure_logging,
    span_exporter,
    trace_id_of,
    tracer_provider,
)
from avis.shared.settings import CommonSettings


def test_sensitive_keys_are_redacted_at_any_depth(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test", fmt="json")
    structlog.get_logger().info(
        "case drafted",
        case_id="c-1",
        email="eloise@example.org",
        patient={"given_name": "Éloïse", "family_name": "Dupré", "language": "fr"},
        items=[{"clinical_summary": "douleur thoracique"}],
    )
    out = capsys.readouterr().err
    line = json.loads(out.strip().splitlines()[-1])
    assert line["case_id"] == "c-1"
    assert line["service"] == "test"
    for secret in ("eloise@example.org", "Éloïse", "Dupré", "douleur", "\\u00c9lo"):
        assert secret not in out


def test_trace_id_of_traceparent() -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_id_of(tp) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_of("garbage") == ""


def test_logged_exceptions_keep_types_and_frames_but_not_messages(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("test", fmt="json")
    try:
        raise ValueError("patient Éloïse Dupré has angina")
    except ValueError:
        structlog.get_logger().exception("failed")
    out = capsys.readouterr().err
    line = json.loads(out.strip().splitlines()[-1])
    assert line["exception"][0]["type"] == "ValueError"
    assert "test_observability.py" in line["exception"][0]["frames"][-1]
    assert "angina" not in out and "Dupr" not in out


def _spans_with_bytes(exporter: SpanExporter) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("kafka publish") as span:
        span.set_attribute("messaging.kafka.message.key", b"case-123")
        span.set_attribute("raw", b"\xff\x00")
        span.add_event("sent", {"key": b"case-123"})
    with tracer.start_as_current_span("plain") as span:
        span.set_attribute("n", 1)
    provider.shutdown()


def test_the_console_exporter_exports_spans_carrying_bytes() -> None:
    """FastStream records the Kafka key as bytes: the console exporter must still export it."""
    out = io.StringIO()
    exporter = span_exporter("console")
    assert isinstance(exporter, JsonSafeExporter)
    exporter.inner = ConsoleSpanExporter(out=out)
    _spans_with_bytes(exporter)
    decoder = json.JSONDecoder()
    text, spans = out.getvalue(), []
    index = 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        span, index = decoder.raw_decode(text, index)
        spans.append(span)
    assert [s["name"] for s in spans] == ["kafka publish", "plain"]
    assert spans[0]["attributes"]["messaging.kafka.message.key"] == "case-123"
    assert spans[0]["attributes"]["raw"] == "ff00"
    assert spans[0]["events"][0]["attributes"]["key"] == "case-123"


def test_without_the_wrapper_the_console_exporter_fails_on_bytes() -> None:
    """The failure the wrapper fixes is real (so the test above can fail)."""
    out = io.StringIO()
    with pytest.raises(TypeError, match="bytes"):
        ConsoleSpanExporter(out=out).export([_one_span_with_bytes()])


def _one_span_with_bytes() -> ReadableSpan:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("k") as span:
        span.set_attribute("key", b"case-1")
    (finished,) = exporter.get_finished_spans()
    return finished


def test_every_configured_exporter_is_json_safe() -> None:
    for name, endpoint in (("otlp", "http://127.0.0.1:4318"), ("zipkin", "http://127.0.0.1:9411")):
        assert isinstance(span_exporter(name, endpoint), JsonSafeExporter)
    assert span_exporter("none") is None
    with pytest.raises(ValueError, match="AVIS_OTEL_EXPORTER"):
        span_exporter("jaegr")


def test_spans_ended_and_exported_are_counted() -> None:
    """What the tracing bench reads: every span ended, and every span the exporter took."""
    ended = SPANS_ENDED.labels("count-test")
    exported = SPANS_EXPORTED.labels("count-test", "success")
    before = ended._value.get(), exported._value.get()
    provider = TracerProvider()
    provider.add_span_processor(CountEnded("count-test"))
    provider.add_span_processor(
        SimpleSpanProcessor(JsonSafeExporter(InMemorySpanExporter(), "count-test"))
    )
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("outer"), tracer.start_as_current_span("inner"):
        pass
    assert (ended._value.get(), exported._value.get()) == (before[0] + 2, before[1] + 2)


def test_the_batch_processor_takes_the_settings_sizes() -> None:
    batching = SpanBatching(queue_size=100, batch_size=10, delay_ms=50)
    provider = tracer_provider("batch-test", "console", "", batching)
    counted, batched = provider._active_span_processor._span_processors
    assert isinstance(counted, CountEnded) and isinstance(batched, BatchSpanProcessor)
    inner = batched._batch_processor
    assert (inner._max_queue_size, inner._max_export_batch_size) == (100, 10)
    assert inner._schedule_delay_millis == 50
    provider.shutdown()
    (counted,) = tracer_provider("batch-test")._active_span_processor._span_processors
    assert isinstance(counted, CountEnded)


def test_a_batch_larger_than_the_queue_is_refused() -> None:
    with pytest.raises(ValueError, match="AVIS_OTEL_BATCH_SIZE"):
        CommonSettings(service_name="t", otel_queue_size=100, otel_batch_size=200)
