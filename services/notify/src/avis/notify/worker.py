"""The webhook worker: the channel of the deliveries' due-queue. One attempt signs a delivery with
its subscription's live secrets and posts it; what came of it is recorded on the delivery, and
counted on the subscription, which is disabled after too many failures in a row (or at once on
410 Gone). A failed delivery is retried with exponential backoff within its window, then dead
(replayable). Attempts run in a pool, so a slow partner holds only its own share."""

import random
from contextlib import AbstractAsyncContextManager
from datetime import datetime

import structlog
from prometheus_client import Counter

from avis.notify import rules
from avis.notify.models import DeliveryStatus, Outcome
from avis.notify.queue import Pool
from avis.notify.settings import Settings
from avis.notify.store import DeliveryAttempt, DeliveryDoc, Store, SubscriptionDoc, secret_aad
from avis.notify.webhooks import Answer, WebhookClient, sign
from avis.shared import clock
from avis.shared.mongo import AggregateLocks, lock_key
from avis.shared.observability import WEBHOOK_PARTNER_ATTEMPTS, case_span
from avis.shared.sealing import Keyring

log = structlog.get_logger("avis.notify")

WEBHOOK_ATTEMPTS = Counter(
    "avis_notify_webhook_attempts_total", "Webhook delivery attempts, by outcome", ["outcome"]
)
WEBHOOKS_DEAD = Counter("avis_notify_webhook_dead_total", "Webhook deliveries given up")
SUBSCRIPTIONS_DISABLED = Counter(
    "avis_notify_subscriptions_disabled_total",
    "Subscriptions disabled after failures in a row or a 410 Gone",
    ["partner"],
)


class WebhookWorker:
    """Delivers one queued webhook per attempt, with the same `webhook-id` on every retry."""

    def __init__(
        self,
        *,
        store: Store,
        locks: AggregateLocks,
        keyring: Keyring,
        client: WebhookClient,
        settings: Settings,
    ) -> None:
        self.store = store
        self.locks = locks
        self.keyring = keyring
        self.client = client
        self.settings = settings

    def pool(self) -> Pool[DeliveryDoc]:
        """Deliveries in flight at once, in all, per subscription and per partner."""
        return Pool(
            self.settings.webhook_concurrency,
            [
                (lambda delivery: delivery.subscription_id, self.settings.webhook_per_subscription),
                (lambda delivery: delivery.partner_id, self.settings.webhook_per_partner),
            ],
        )

    async def waiting(self, item_ids: list[str]) -> dict[str, DeliveryDoc]:
        """The deliveries still queued, in one read."""
        return {
            d.id: d
            for d in await self.store.deliveries_of(item_ids)
            if d.status is DeliveryStatus.QUEUED
        }

    def due_at(self, item: DeliveryDoc) -> datetime | None:
        """When its next attempt is due."""
        return item.next_at

    def holding(self, item: DeliveryDoc) -> AbstractAsyncContextManager[None]:
        """The delivery's lock: a replay waits for the attempt and its filing."""
        return self.locks.hold(lock_key("delivery", item.id))

    async def attempt(self, item: DeliveryDoc) -> datetime | None:
        """Post it once and record the outcome; when to retry, None once delivered or dead.
        The delivery as this pass read it, queued: only this loop moves a queued delivery on
        (a replay takes only a dead one), and the loop never reads one whose attempt is in
        flight or ended after the read began."""
        delivery = item
        # As its fan-out read it, when that was in this copy and just now (handed over with
        # the delivery, in the pass after it was queued); else as it is now.
        sub = delivery.subscription_as_queued or await self.store.subscription(
            delivery.subscription_id
        )
        if sub is None or not sub.enabled:
            why = "subscription deleted" if sub is None else "subscription disabled"
            await self._dead(delivery, why)
            return None
        now = clock.now()
        answer = await self._post(delivery, sub, now)
        WEBHOOK_ATTEMPTS.labels(answer.outcome.value).inc()
        WEBHOOK_PARTNER_ATTEMPTS.labels(sub.partner_id, answer.outcome.value).inc()
        delivery.attempts.append(
            DeliveryAttempt(
                at=now,
                outcome=answer.outcome,
                code=answer.code,
                latency_ms=answer.latency_ms,
                reason=answer.reason,
            )
        )
        delivery.first_attempt_at = delivery.first_attempt_at or now
        return await self._record(delivery, sub, answer)

    async def _post(self, delivery: DeliveryDoc, sub: SubscriptionDoc, now: datetime) -> Answer:
        """One signed post, in the case's trace."""
        with case_span("notify.webhook.deliver", delivery.traceparent) as span:
            span.set_attribute("avis.case_id", delivery.case_id)
            span.set_attribute("avis.delivery_id", delivery.id)
            span.set_attribute("avis.subscription_id", sub.id)
            span.set_attribute("avis.attempt", len(delivery.attempts) + 1)
            headers = {
                "webhook-id": delivery.webhook_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": sign(
                    self._live_secrets(sub, now), delivery.webhook_id, now, delivery.body
                ),
            }
            answer = await self.client.post(sub.url, delivery.body, headers)
            span.set_attribute("avis.send_outcome", answer.outcome.value)
            if answer.code is not None:
                span.set_attribute("http.response.status_code", answer.code)
            return answer

    async def _record(
        self, delivery: DeliveryDoc, sub: SubscriptionDoc, answer: Answer
    ) -> datetime | None:
        fields = {"delivery_id": delivery.id, "code": answer.code, "reason": answer.reason}
        if answer.outcome is Outcome.SENT:
            delivery.status, delivery.next_at = DeliveryStatus.DELIVERED, None
            delivery.delivered_at = clock.now()
            await self.store.save_delivery(delivery)
            if sub.consecutive_failures:  # read for this attempt: nothing to reset otherwise
                await self._subscription_result(sub.id, ok=True, why="")
            log.info("webhook delivered", **fields)
            return None
        if answer.outcome is Outcome.PERMANENT:
            await self._subscription_result(sub.id, ok=False, why=answer.reason, now_off=True)
            await self._dead(delivery, answer.reason, attempted=True)
            return None
        failures = sum(a.outcome is not Outcome.SENT for a in delivery.attempts)
        jitter = random.uniform(*rules.POST_JITTER)  # noqa: S311
        assert delivery.first_attempt_at is not None
        backoff = self.settings.webhook_backoff()
        retry_at = rules.webhook_retry_at(
            failures,
            delivery.first_attempt_at,
            clock.now(),
            base=backoff.base,
            cap=backoff.cap,
            window=backoff.window,
            jitter=jitter,
        )
        await self._subscription_result(sub.id, ok=False, why=answer.reason)
        if retry_at is None:
            await self._dead(delivery, f"gave up after {failures} attempts", attempted=True)
            return None
        delivery.next_at = retry_at
        await self.store.save_delivery(delivery)
        log.warning("webhook retried", retry_at=retry_at.isoformat(), **fields)
        return retry_at

    async def _dead(self, delivery: DeliveryDoc, why: str, attempted: bool = False) -> None:
        """Give the delivery up (replayable); `why` joins the last attempt's reason if it was
        attempted, else it is recorded as an attempt of its own."""
        if not attempted:
            delivery.attempts.append(
                DeliveryAttempt(at=clock.now(), outcome=Outcome.PERMANENT, reason=why)
            )
        elif delivery.attempts:
            last = delivery.attempts[-1]
            if why != last.reason:
                last.reason = f"{last.reason}; {why}"
        delivery.status, delivery.next_at = DeliveryStatus.DEAD, None
        await self.store.save_delivery(delivery)
        WEBHOOKS_DEAD.inc()
        log.error("webhook dead", delivery_id=delivery.id, reason=why)

    async def _subscription_result(
        self, subscription_id: str, *, ok: bool, why: str, now_off: bool = False
    ) -> None:
        """Count failures in a row; disable the subscription when they are too many (or the
        endpoint said 410 Gone)."""
        async with self.locks.hold(lock_key("subscription", subscription_id)):
            sub = await self.store.subscription(subscription_id)
            if sub is None:
                return
            before = sub.model_copy(deep=True)
            if ok:
                if sub.consecutive_failures == 0:
                    return
                sub.consecutive_failures = 0
            else:
                sub.consecutive_failures += 1
                threshold = self.settings.webhook_disable_after_failures
                if sub.enabled and (
                    now_off or rules.should_disable(sub.consecutive_failures, threshold)
                ):
                    sub.enabled = False
                    sub.disabled_at = clock.now()
                    sub.disabled_reason = (
                        f"the endpoint answered {why}"
                        if now_off
                        else f"{sub.consecutive_failures} failed attempts in a row (last: {why})"
                    )
                    SUBSCRIPTIONS_DISABLED.labels(sub.partner_id).inc()
                    log.warning("subscription disabled", subscription_id=sub.id)
            sub.updated_at = clock.now()
            await self.store.save_subscription(sub, before)

    def _live_secrets(self, sub: SubscriptionDoc, now: datetime) -> list[str]:
        """The secrets that sign now: the current one and any still in its grace period."""
        live = [s for s in sub.secrets if s.expires_at is None or s.expires_at > now]
        return [self.keyring.open(s.sealed, aad=secret_aad(sub.id, s.id)).decode() for s in live]
