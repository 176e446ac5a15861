"""Grant the local broker the ACLs of deploy/k8s/base/users.yaml, so that `make run` and the test
stack limit each service's Kafka user exactly as Kubernetes does (one source for both; the
users themselves and their passwords are made by infra.sh when it formats the broker).

    .venv/bin/python deploy/kafka/acls.py [USERS_YAML]

Connects as the broker's administrator (AVIS_KAFKA_BOOTSTRAP, AVIS_KAFKA_ADMIN_PASSWORD). Granting
an ACL the broker already holds changes nothing, so it runs at every start.
"""

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.admin import CreateAclsRequest

from avis.shared.kafka_access import KafkaAccess

USERS = Path(__file__).resolve().parents[1] / "k8s/base/users.yaml"
# The codes of Kafka's protocol (org.apache.kafka.common.acl and .resource).
RESOURCE = {"topic": 2, "group": 3, "cluster": 4, "transactionalId": 5}
PATTERN = {"literal": 3, "prefix": 4}  # Strimzi's spelling
OPERATION = {
    "All": 2, "Read": 3, "Write": 4, "Create": 5, "Delete": 6, "Alter": 7, "Describe": 8,
    "ClusterAction": 9, "DescribeConfigs": 10, "AlterConfigs": 11, "IdempotentWrite": 12,
}  # fmt: skip
ALLOW = 3
Acl = tuple[int, str, int, str, str, int, int]


def acls(path: Path) -> list[Acl]:
    """Every (resource type, name, pattern, principal, host, operation, permission) the file's
    KafkaUsers are granted."""
    found: list[Acl] = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc.get("kind") != "KafkaUser":
            continue
        principal = f"User:{doc['metadata']['name']}"
        for acl in doc["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            kind = RESOURCE[resource["type"]]
            name = resource.get("name", "kafka-cluster")
            pattern = PATTERN[resource.get("patternType", "literal")]
            host = acl.get("host", "*")
            for operation in acl["operations"]:
                found.append((kind, name, pattern, principal, host, OPERATION[operation], ALLOW))
    return found


async def grant(access: KafkaAccess, wanted: list[Acl]) -> None:
    """Create each ACL on the broker; SystemExit naming the first the broker refuses."""
    client = AIOKafkaClient(**access.options(), request_timeout_ms=10000)
    try:
        await client.bootstrap()
        node = client.get_random_node()
        # One ACL per request (what aiokafka's request builds), sent together.
        responses: list[Any] = await asyncio.gather(
            *(client.send(node, CreateAclsRequest(*acl)) for acl in wanted)
        )
        for acl, response in zip(wanted, responses, strict=True):
            for code, message in response.creation_responses:
                if code:
                    raise SystemExit(f"ACL {acl} refused: error {code} {message or ''}".strip())
    finally:
        await client.close()


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else USERS
    bootstrap = os.environ.get("AVIS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    wanted = acls(path)
    asyncio.run(grant(KafkaAccess.admin(bootstrap), wanted))
    users = sorted({acl[3].removeprefix("User:") for acl in wanted})
    print(f"ACLs on {bootstrap}: {len(wanted)} granted to {', '.join(users)}")


if __name__ == "__main__":
    main()
