"""Kafka with identities, on the test stack's broker: events drive authorisation (a
`review-assigned` makes a reviewer current on a case), so the broker must refuse an event from
anyone but the topic's owner, and anyone it does not know. The ACLs are those of
deploy/k8s/base/users.yaml, granted by deploy/kafka/acls.py."""

import os

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from avis.shared.kafka_access import KafkaAccess
from avis.shared.topics import AUDIT_ANCHORED, CASE_SUBMITTED, REVIEW_ASSIGNED
from tests.support.basics import BOOTSTRAP

pytestmark = pytest.mark.asyncio


def service(name: str, password: str | None = None) -> KafkaAccess:
    """The Kafka identity the test stack gave `name` (deploy/local/infra.sh)."""
    return KafkaAccess(
        BOOTSTRAP, name, password or os.environ[f"AVIS_{name.upper()}_KAFKA_PASSWORD"]
    )


async def write(access: KafkaAccess, topic: str) -> None:
    """Send one record to `topic` as `access` (raises what the broker answers)."""
    producer = AIOKafkaProducer(**access.options(), request_timeout_ms=5000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"forged", key=b"AV-forged")
    finally:
        await producer.stop()


async def read(access: KafkaAccess, topic: str) -> None:
    """Fetch from the start of partition 0 of `topic` as `access`, without a group."""
    consumer = AIOKafkaConsumer(**access.options(), group_id=None)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        await consumer.getmany(partition, timeout_ms=2000, max_records=1)
    finally:
        await consumer.stop()


async def test_a_producer_with_reviews_credentials_cannot_write_case_submitted() -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await write(service("review"), CASE_SUBMITTED)


async def test_an_event_that_assigns_a_reviewer_comes_from_review_only() -> None:
    for forger in ("intake", "reports", "notify", "web"):
        with pytest.raises(TopicAuthorizationFailedError):
            await write(service(forger), REVIEW_ASSIGNED)


async def test_a_service_reads_what_it_subscribes_to_and_nothing_else() -> None:
    await read(service("review"), CASE_SUBMITTED)  # review subscribes to it: no error
    with pytest.raises(TopicAuthorizationFailedError):
        await read(service("intake"), CASE_SUBMITTED)  # intake only writes it


async def test_the_services_with_a_trail_anchor_it_and_none_reads_the_anchors() -> None:
    keepers = ("intake", "review", "reports")
    for keeper in keepers:
        await write(service(keeper), AUDIT_ANCHORED)
    for other in ("notify", "web"):
        with pytest.raises(TopicAuthorizationFailedError):
            await write(service(other), AUDIT_ANCHORED)
    # Only the auditor reads them: a writer cannot check itself.
    for keeper in keepers:
        with pytest.raises(TopicAuthorizationFailedError):
            await read(service(keeper), AUDIT_ANCHORED)


async def test_an_anonymous_client_cannot_connect() -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, request_timeout_ms=5000)
    with pytest.raises(KafkaError):
        await producer.start()
    await producer.stop()


async def test_a_wrong_password_cannot_connect() -> None:
    with pytest.raises(KafkaError):
        await write(service("review", password="not-the-password"), REVIEW_ASSIGNED)
