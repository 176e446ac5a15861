"""The access trails' heads anchored outside the stores, on the compacted `audit-anchored` topic.

A trail's hash chain shows a changed, removed or reordered entry, but not a chain rewritten whole
with every hash recomputed by someone who can write the store. So each service remembers the
cases its trail was appended to (`AuditTrail.unanchored`, in memory) and, every
`AVIS_AUDIT_ANCHOR_SECONDS`, writes their heads to the store (`AuditTrail.keep`, one request)
and publishes them (`avis.audit.anchored.v1`: position and hash,
no health data) keyed `<service>/<case id>`. Kafka keeps the last anchor of each key, under
identities the store's writers do not hold; `avis-audit verify` reads them back and checks each
against the chain (`avis.shared.audit.off_anchor`).

A round that fails puts its cases back for the next; a copy that stops anchors what it holds one
last time; one that crashes leaves those heads unanchored until the case's next entry.
"""

import asyncio
import contextlib
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import KafkaBroker

from avis.shared.audit import AuditTrail
from avis.shared.envelope import Event, PoisonMessage
from avis.shared.events import TrailAnchored
from avis.shared.kafka import partitions_of
from avis.shared.kafka_access import KafkaAccess
from avis.shared.observability import EVENTS_PUBLISHED
from avis.shared.topics import AUDIT_ANCHORED

log = structlog.get_logger("avis.anchors")
ANCHOR_TYPE = "avis.audit.anchored.v1"
# The most a stopping copy waits to anchor what it holds.
LAST_ROUND_SECONDS = 3.0


def anchor_key(service: str, case_id: str) -> str:
    """The Kafka key of a service's anchors of a case (compaction keeps the last of each)."""
    return f"{service}/{case_id}"


class Anchors:
    """Publishes the heads of the chains of one service's trail appended to since last time."""

    def __init__(self, service: str, trail: AuditTrail, broker: KafkaBroker) -> None:
        self.service = service
        self.trail = trail
        self.broker = broker

    async def round(self) -> int:
        """Anchor the heads of the cases appended to since the last round; how many."""
        cases = self.trail.take_unanchored()
        if not cases:
            return 0
        try:
            heads = await self.trail.keep(cases)  # written to the store, then anchored
            at = datetime.now(UTC)
            acks = []
            for head in heads:
                payload = TrailAnchored(
                    case_id=head.id,
                    service=self.service,
                    seq=head.seq,
                    hash=head.hash,
                    anchored_at=at,
                )
                event = Event.new(payload, f"/avis/{self.service}")
                acks.append(
                    await self.broker.publish(
                        event.body(),
                        topic=AUDIT_ANCHORED,
                        key=anchor_key(self.service, head.id).encode(),
                        headers=event.headers(),
                        no_confirm=True,
                    )
                )
            await asyncio.gather(*acks)
        except BaseException:
            self.trail.unanchored.update(cases)  # anchored by the next round
            raise
        EVENTS_PUBLISHED.labels(self.service, AUDIT_ANCHORED, ANCHOR_TYPE).inc(len(heads))
        return len(heads)

    async def run(self, every: float) -> None:
        """A round every `every` seconds for the life of the service, and a last one on stop."""
        try:
            while True:
                await asyncio.sleep(every)
                try:
                    await self.round()
                except Exception as exc:  # the broker or the store is away: next round
                    log.warning("trail heads not anchored this time", error=type(exc).__name__)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(LAST_ROUND_SECONDS):
                    await self.round()
            raise


async def read_anchors(kafka: KafkaAccess, service: str) -> dict[str, TrailAnchored]:
    """The last anchor of each case of `service`'s trail (the highest position where records of
    a key have not been compacted yet), read from the start of the topic to its end."""
    consumer = AIOKafkaConsumer(
        **kafka.options(), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    anchors: dict[str, TrailAnchored] = {}
    prefix = anchor_key(service, "").encode()
    try:
        numbers = await partitions_of(kafka, AUDIT_ANCHORED)
        parts = [TopicPartition(AUDIT_ANCHORED, p) for p in numbers]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        while any([await consumer.position(tp) < ends[tp] for tp in parts]):
            batch = await consumer.getmany(*parts, timeout_ms=1000, max_records=1000)
            for record in (r for records in batch.values() for r in records):
                if not (record.key or b"").startswith(prefix) or record.value is None:
                    continue
                try:
                    event = Event.from_kafka(AUDIT_ANCHORED, dict(record.headers), record.value)
                except PoisonMessage as exc:
                    log.warning("an anchor is unreadable", offset=record.offset, error=str(exc))
                    continue
                anchor = event.payload()
                assert isinstance(anchor, TrailAnchored)
                kept = anchors.get(anchor.case_id)
                if kept is None or anchor.seq >= kept.seq:
                    anchors[anchor.case_id] = anchor
    finally:
        await consumer.stop()
    return anchors
