"""The Kafka topics of DESIGN.md section 3, their settings, and a command that creates them."""

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from avis.shared.kafka_access import KafkaAccess
from avis.shared.retry import Backoff
from avis.shared.settings import CommonSettings

CASE_SUBMITTED = "case-submitted"
REVIEW_ASSIGNED = "review-assigned"
REVIEW_COMPLETED = "review-completed"
REPORT_READY = "report-ready"
TOPICS = (CASE_SUBMITTED, REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY)
# The heads of the services' access trails, anchored outside their stores (avis.shared.anchors):
# compacted, one record kept per service and case, read by `avis-audit verify` only.
AUDIT_ANCHORED = "audit-anchored"
DAY_MS = 24 * 3600 * 1000
WEEK_MS = 7 * DAY_MS


def inbox_days(settings: CommonSettings) -> int:
    """Days a consumer keeps its processed-event markers: `AVIS_INBOX_RETENTION_DAYS`, or else
    a week past the longest the broker keeps any record, dead letters included, since a
    replayed dead letter reaches every consumer group of its topic again."""
    longest = max(int(s.config.get("retention.ms", "0")) for s in topic_specs())
    return settings.inbox_retention_days or -(-longest // DAY_MS) + 7


def dlq(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return f"{topic}.dlq"


@dataclass(frozen=True)
class TopicSpec:
    """A topic as the platform creates it."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(replication: int = 1) -> list[TopicSpec]:
    """Every topic, main and dead-letter, with partitions and settings."""
    isr = str(min(2, replication))
    main = {
        "min.insync.replicas": isr,
        "retention.ms": str(4 * WEEK_MS),
        "cleanup.policy": "delete",
    }
    dead = {
        "min.insync.replicas": isr,
        "retention.ms": str(13 * WEEK_MS),
        "cleanup.policy": "delete",
    }
    specs = [TopicSpec(t, 6, main) for t in TOPICS]
    specs += [TopicSpec(dlq(t), 1, dead) for t in TOPICS]
    anchors = {"min.insync.replicas": isr, "cleanup.policy": "compact"}
    specs.append(TopicSpec(AUDIT_ANCHORED, 1, anchors))
    return specs


async def ensure_topics(
    kafka: KafkaAccess, replication: int = 1, timeout: float = 60.0
) -> list[str]:
    """Create the missing topics; returns the names created. Retries until the broker answers."""
    deadline = asyncio.get_running_loop().time() + timeout
    retry = Backoff(cap=1.0)
    while True:
        admin = AIOKafkaAdminClient(**kafka.options(), request_timeout_ms=10000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            wanted = [s for s in topic_specs(replication) if s.name not in existing]
            for spec in wanted:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [
                            NewTopic(
                                spec.name, spec.partitions, replication, topic_configs=spec.config
                            )
                        ]
                    )
            return [s.name for s in wanted]
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await retry.wait()
        finally:
            await admin.close()


def main() -> None:
    """Create the platform's topics on `AVIS_KAFKA_BOOTSTRAP` (`avis-topics`), as the broker's
    administrator (AVIS_KAFKA_ADMIN_PASSWORD)."""
    settings = CommonSettings()
    replication = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    created = asyncio.run(ensure_topics(KafkaAccess.admin(settings.kafka_bootstrap), replication))
    print(f"topics on {settings.kafka_bootstrap}: created {len(created)} {created or ''}".strip())


if __name__ == "__main__":
    main()
