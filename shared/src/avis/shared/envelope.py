"""CloudEvents 1.0 in Kafka binary mode: the envelope every event travels in."""

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from avis.shared.events import EVENT_TYPES, TYPE_OF, Payload, topic_of
from avis.shared.observability import current_traceparent

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
# The largest body a consumer reads. The largest event the platform writes is a completed
# opinion at its field limits (six sections of 20,000 characters, sealed): about 650 KB; the
# broker refuses anything above about 1 MB. Between the two, a body is nobody's event.
MAX_EVENT_BYTES = 768 * 1024


class PoisonMessage(Exception):
    """A message no retry can fix: undecodable, invalid against its schema, or of unknown type."""


def new_event_id() -> str:
    """A fresh event id (also the associated data of the fields its payload seals)."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Event:
    """An event as it enters the outbox and as a consumer meets it."""

    id: str
    type: str
    source: str
    time: datetime
    subject: str
    topic: str
    data: dict[str, Any]
    traceparent: str = ""
    tracestate: str = ""

    @classmethod
    def new(cls, payload: Payload, source: str, event_id: str | None = None) -> "Event":
        """A new event for `payload`: its id, time and trace context are fixed now, for good.

        Pass `event_id` (from `new_event_id`) when the payload seals a field under that id.
        """
        carrier = current_traceparent()
        return cls(
            id=event_id or new_event_id(),
            type=TYPE_OF[type(payload)],
            source=source,
            time=datetime.now(UTC),
            subject=payload.case_id,
            topic=topic_of(payload),
            data=payload.model_dump(mode="json"),
            traceparent=carrier.get("traceparent", ""),
            tracestate=carrier.get("tracestate", ""),
        )

    def headers(self) -> dict[str, str]:
        """The binary-mode Kafka headers of this event."""
        headers = {
            "ce_specversion": SPECVERSION,
            "ce_id": self.id,
            "ce_source": self.source,
            "ce_type": self.type,
            "ce_time": self.time.isoformat(),
            "ce_subject": self.subject,
            "content-type": CONTENT_TYPE,
        }
        if self.traceparent:
            headers["traceparent"] = self.traceparent
        if self.tracestate:
            headers["tracestate"] = self.tracestate
        return headers

    def body(self) -> bytes:
        """The Kafka message value."""
        return json.dumps(self.data, separators=(",", ":")).encode()

    def payload(self) -> Payload:
        """The typed payload, validated against its model."""
        return _validate(self.type, self.data)

    def to_doc(self) -> dict[str, Any]:
        """The outbox entry stored beside the state change."""
        return {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "time": self.time,
            "subject": self.subject,
            "topic": self.topic,
            "data": self.data,
            "traceparent": self.traceparent,
            "tracestate": self.tracestate,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Event":
        """An outbox entry read back from the store."""
        time = doc["time"]
        return cls(**{**doc, "time": time if time.tzinfo else time.replace(tzinfo=UTC)})

    @classmethod
    def from_kafka(cls, topic: str, headers: dict[str, Any], body: bytes) -> "Event":
        """Decode a consumed message; raises PoisonMessage when nothing can make it valid."""
        if len(body) > MAX_EVENT_BYTES:
            raise PoisonMessage(f"oversize payload: {len(body)} bytes, over {MAX_EVENT_BYTES}")
        h = {}
        for k, v in headers.items():
            if v is None:  # a header without a value: as good as absent
                continue
            try:
                h[k] = v.decode() if isinstance(v, bytes) else str(v)
            except UnicodeDecodeError:
                raise PoisonMessage(f"header {k!r} is not UTF-8") from None
        missing = [
            k for k in ("ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time") if k not in h
        ]
        if missing:
            raise PoisonMessage(f"not a CloudEvent: missing headers {', '.join(missing)}")
        if h["ce_specversion"] != SPECVERSION:
            raise PoisonMessage(f"unsupported CloudEvents version {h['ce_specversion']!r}")
        if h["ce_type"] not in EVENT_TYPES:
            raise PoisonMessage(f"unknown event type {h['ce_type']!r}")
        try:
            data = json.loads(body)
            time = datetime.fromisoformat(h["ce_time"])
        except (ValueError, UnicodeDecodeError) as exc:
            raise PoisonMessage(f"undecodable body or time: {type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise PoisonMessage("body is not a JSON object")
        event = cls(
            id=h["ce_id"],
            type=h["ce_type"],
            source=h["ce_source"],
            time=time if time.tzinfo else time.replace(tzinfo=UTC),
            subject=h.get("ce_subject", ""),
            topic=topic,
            data=data,
            traceparent=h.get("traceparent", ""),
            tracestate=h.get("tracestate", ""),
        )
        event.payload()  # validate now, so a bad payload is poison before any handler runs
        return event


def _validate(ce_type: str, data: dict[str, Any]) -> Payload:
    model = EVENT_TYPES[ce_type][1]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Field locations and messages only: the input may hold data we must not echo.
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise PoisonMessage(f"invalid {ce_type} payload: {fields}") from None
