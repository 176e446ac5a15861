"""A fault fires the alert rule meant for it, and the alert receiver gets it: the dead-letter
rule on a poison message, the partner rule on a partner's endpoint that fails every delivery, the
broker rule on the broker stopped. The four services run as processes, scraped every second by
VictoriaMetrics; vmalert evaluates copies of deploy/metrics/rules every second, with their
expressions unchanged and their windows short (`for:` 4 s, ranges of 15 minutes or more 1
minute), and sends to the receiver `make run` starts (deploy/metrics/alert_receiver.py).
"""

import re
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from avis.shared.topics import CASE_SUBMITTED
from tests.support.basics import KAFKA, eventually, infra, unique
from tests.support.metrics import MetricsStore, observed_stack, quick_rules, service_env
from tests.support.notify import hook_receiver
from tests.support.samples import case_body, consent_body, pdf, upload
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.infra

DLQ = f"{CASE_SUBMITTED}.dlq"
HOOK_TYPES = ["avis.case.submitted.v1"]


def received_since(store: MetricsStore, name: str, since: float) -> list[dict[str, Any]]:
    """The alerts named `name` the receiver got after `since` (Unix time)."""
    return [a for a in store.fired(name) if float(a["received"]) >= since]


def dead_letters(alert: dict[str, Any]) -> int:
    """The depth an AvisDeadLetter alert reports (its summary starts with it)."""
    summary = str(alert.get("annotations", {}).get("summary", ""))
    found = re.match(r"\s*(\d+)", summary)
    return int(found.group(1)) if found else 0


@pytest.mark.timeout(240)
async def test_each_fault_fires_its_rule_and_the_receiver_gets_it() -> None:
    env = service_env(
        AVIS_DLQ_DEPTH_SECONDS="1",
        AVIS_NOTIFY_WEBHOOK_RETRY_BASE_SECONDS="0.5",
        AVIS_NOTIFY_WEBHOOK_RETRY_MAX_DELAY_SECONDS="1",
    )
    with tempfile.TemporaryDirectory(prefix="avis-alerts-") as state:
        rules = quick_rules(Path(state) / "rules")
        async with (
            observed_stack(Path(state), env=env, rules=rules) as (stack, store),
            hook_receiver() as (hooks, port),
        ):
            await eventually(lambda: {"intake", "review", "reports", "notify", "lag", "vmalert"}
                             <= store.scraped(), timeout=30)  # fmt: skip
            await poison_fires_the_dead_letter_rule(store)
            hooks.answer["/down"] = 503
            await failing_partner_fires_the_partner_rule(stack, store, port)
            await broker_stop_fires_the_broker_rule(store)


async def poison_fires_the_dead_letter_rule(store: MetricsStore) -> None:
    depth = f'max(avis_dlq_depth{{topic="{DLQ}"}})'
    before = store.total(depth)
    sent = time.time()
    producer = AIOKafkaProducer(**KAFKA.options())
    await producer.start()
    try:
        await producer.send_and_wait(CASE_SUBMITTED, b"{not json", key=unique("poison").encode())
    finally:
        await producer.stop()
    await eventually(lambda: store.total(depth) > before, timeout=30)

    def fired() -> bool:
        alerts = received_since(store, "AvisDeadLetter", sent)
        return any(a["labels"].get("topic") == DLQ and dead_letters(a) > before for a in alerts)

    await eventually(fired, timeout=45, interval=1)


async def failing_partner_fires_the_partner_rule(
    stack: ServiceStack, store: MetricsStore, port: int
) -> None:
    partner = unique("insurer")
    since = time.time()
    async with stack.client("notify", f"{partner}-api", "partner", partner) as p:
        made = await p.post(
            "/v1/subscriptions",
            json={"url": f"http://127.0.0.1:{port}/down", "event_types": HOOK_TYPES},
        )
        assert made.status_code == 201, made.text
    body = case_body(partner_reference=unique("INS"))
    async with stack.client("intake", f"{partner}-api", "partner", partner) as filer:
        draft = await filer.post("/v1/cases", json=body)
        assert draft.status_code == 201, draft.text
        case_id = draft.json()["case_id"]
        assert (await filer.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))).is_success
        submitted = await filer.post(
            f"/v1/cases/{case_id}/submit", json=consent_body("review", "share_with_partner")
        )
        assert submitted.status_code == 200, submitted.text

    def fired() -> bool:
        alerts = received_since(store, "AvisPartnerFailing", since)
        return any(a["labels"].get("partner") == partner for a in alerts)

    await eventually(fired, timeout=60, interval=1)


async def broker_stop_fires_the_broker_rule(store: MetricsStore) -> None:
    since = time.time()
    infra("stop", "kafka")
    try:
        await eventually(
            lambda: received_since(store, "AvisBrokerUnreachable", since), timeout=60, interval=1
        )
    finally:
        infra("start", "kafka")
        infra("wait", "kafka")
