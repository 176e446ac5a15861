"""Use cases of the notify service: events become queued emails (or wait, parked, for their
case), and the sender works the queue; reading a case's notifications."""

import asyncio
import base64
import contextlib
import json
import random
import secrets
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from prometheus_client import Counter

from avis.notify import rules
from avis.notify.emails import compose
from avis.notify.mailer import Mailer, Result, SmtpTarget
from avis.notify.models import (
    Delivery,
    DeliveryPage,
    Notification,
    NotificationPage,
    SecretRotated,
    Subscription,
    SubscriptionCreated,
    SubscriptionIn,
    SubscriptionPage,
    SubscriptionPatch,
)
from avis.notify.rules import DeliveryStatus, Outcome, SendStatus, Template
from avis.notify.settings import Settings
from avis.notify.store import (
    Attempt,
    CaseDoc,
    DeliveryAttempt,
    DeliveryDoc,
    SecretDoc,
    SendDoc,
    Store,
    SubscriptionDoc,
    contact_aad,
    secret_aad,
)
from avis.notify.webhooks import Refused, WebhookClient, sign
from avis.shared.envelope import Event, PoisonMessage
from avis.shared.events import (
    CaseSubmitted,
    PatientContact,
    Payload,
)
from avis.shared.mongo import STORE_ERRORS, AggregateLocks
from avis.shared.observability import case_span
from avis.shared.parking import Parking
from avis.shared.problems import Problem
from avis.shared.retry import Backoff
from avis.shared.sealing import Keyring, SealingError
from avis.shared.security import Principal

log = structlog.get_logger("avis.notify")

SENDS_QUEUED = Counter("avis_notify_queued_total", "Notifications queued", ["channel", "template"])
SEND_ATTEMPTS = Counter(
    "avis_notify_attempts_total", "Attempts to send, by outcome", ["channel", "template", "outcome"]
)
WEBHOOK_ATTEMPTS = Counter(
    "avis_notify_webhook_attempts_total", "Webhook delivery attempts, by outcome", ["outcome"]
)
WEBHOOKS_DEAD = Counter("avis_notify_webhook_dead_total", "Webhook deliveries given up")
RECENT_DELIVERIES = 200  # a subscription lists its latest deliveries, no more
SENDS_FAILED = Counter(
    "avis_notify_failed_total", "Sends given up: refused for good or retries spent", ["channel"]
)


def utcnow() -> datetime:
    """Now, at the store's precision (milliseconds)."""
    at = datetime.now(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def not_found(what: str) -> Problem:
    """The same 404 whether it does not exist or the caller may not see it."""
    return Problem(404, "not-found", "Not Found", f"No {what} with that id is visible to you.")


class NotifyService:
    """The patient's emails, from events to the SMTP server."""

    def __init__(
        self,
        *,
        store: Store,
        locks: AggregateLocks,
        keyring: Keyring,
        settings: Settings,
        parking: Parking,
        mailer: Mailer | None = None,
        webhooks: WebhookClient | None = None,
    ) -> None:
        self.store = store
        self.locks = locks
        self.settings = settings
        self.parking = parking
        self.keyring = keyring
        self.mailer = mailer or Mailer(SmtpTarget.from_settings(settings))
        self.webhooks = webhooks or WebhookClient(
            allow_http_loopback=settings.webhook_allow_http_loopback,
            timeout=settings.webhook_timeout_seconds,
            connect_timeout=settings.webhook_connect_timeout_seconds,
        )
        self.tz = ZoneInfo(settings.timezone)
        # Every write to a due-queue's bucket documents, one lock per queue (email, webhook).
        self._due = {"email": asyncio.Lock(), "webhook": asyncio.Lock()}
        self._wake = {"email": asyncio.Event(), "webhook": asyncio.Event()}
        self._cursor: dict[str, int | None] = {"email": None, "webhook": None}
        # Webhook deliveries in flight, and how many per subscription.
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._per_subscription: Tally[str] = Tally()
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)

    # --- events -------------------------------------------------------------------------

    async def case_submitted(self, *, event: Event, payload: CaseSubmitted) -> None:
        """The case arrives: keep its contact sealed, tell the patient, then release the events
        parked before it, in the order they happened (several topics are not ordered)."""
        async with self.locks.hold(f"case:{payload.case_id}"):
            case = await self.store.case(payload.case_id) or CaseDoc(id=payload.case_id)
            if not case.submitted:
                self._take_contact(case, event, payload)
                # Stored before any send is queued: the sender opens it, and may run at once.
                await self.store.save_case(case)
            queued = await self._apply(case, event, payload)
            parked, case.parked = case.parked, []
            for entry in sorted(parked, key=lambda e: Event.from_doc(e).time):
                early = Event.from_doc(entry)
                queued += await self._apply(case, early, early.payload())
            await self._save(case, queued)
            if parked:
                await self.parking.release(case.id)

    async def apply(self, *, event: Event, payload: Payload) -> None:
        """Apply one event to its case: park it, or decide and queue its email."""
        async with self.locks.hold(f"case:{payload.case_id}"):
            case = await self.store.case(payload.case_id) or CaseDoc(id=payload.case_id)
            await self._save(case, await self._apply(case, event, payload))

    async def expire_parked(self, case_id: str, give_up: Callable[[], Awaitable[None]]) -> bool:
        """The case never came: drop the events parked on it and dead-letter them (`give_up`);
        False if it is known by now, and nothing is dropped."""
        async with self.locks.hold(f"case:{case_id}"):
            case = await self.store.case(case_id)
            if not rules.waits_for_its_case(submitted=case is not None and case.submitted):
                return False
            if case is not None and case.parked:
                case.parked = []
                await self._save(case, 0)
            await give_up()
            log.warning("events for an unknown case dead-lettered", case_id=case_id)
            return True

    async def _save(self, case: CaseDoc, queued: int) -> None:
        case.updated_at = utcnow()
        await self.store.save_case(case)
        if queued:
            self.wake()
            self.wake("webhook")

    async def _apply(self, case: CaseDoc, event: Event, payload: Payload) -> int:
        read = rules.reading(payload, case.view, self.tz)
        decision = read.decision
        name = f"notify.{event.type.removeprefix('avis.').removesuffix('.v1')}"
        with case_span(name, case.traceparent or event.traceparent) as span:
            span.set_attribute("avis.case_id", case.id)
            span.set_attribute("avis.event_id", event.id)
            if case.reference:
                span.set_attribute("avis.case_reference", case.reference)
            if decision.park:
                if all(p.get("id") != event.id for p in case.parked):
                    case.parked.append(event.to_doc())
                await self.parking.park(event)
                span.set_attribute("avis.notify.decision", "parked")
                log.info("event parked until its case arrives", type=event.type)
                return 0
            view = decision.then
            case.submitted, case.withdrawn = view.submitted, view.withdrawn
            case.told_due, case.report_version = view.told_due, view.report_version
            span.set_attribute("avis.notify.decision", decision.send or f"none: {decision.why}")
            hooks = await self._fan_out(case, event, read)
            if decision.send is None:
                return hooks
            await self._queue(case, event, decision.send, self._params(case, read))
            return 1 + hooks

    def _take_contact(self, case: CaseDoc, event: Event, payload: CaseSubmitted) -> None:
        """Open the contact sealed for the event, keep only its language in clear, and reseal
        it under notify's own associated data (the case), so it stays sealed at rest."""
        try:
            contact = self.keyring.open_model(payload.contact, aad=event.id, model=PatientContact)
        except SealingError as exc:
            raise PoisonMessage(f"contact cannot be opened: {exc}") from None
        case.contact = self.keyring.seal_json(contact, aad=contact_aad(case.id))
        case.language = contact.preferred_language
        case.reference = payload.reference
        case.specialty = payload.specialty.value
        case.patient_id = payload.patient_id
        case.traceparent = event.traceparent
        case.case_url = payload.case_url
        scope = rules.partner_scope(payload.partner_id, [s.value for s in payload.consent_scopes])
        if scope.shared:
            case.partner_id = scope.partner_id
            case.partner_reference = payload.partner_reference

    @staticmethod
    def _params(case: CaseDoc, read: rules.Reading) -> dict[str, str]:
        """What the email needs: codes, dates and links, never a name or clinical text."""
        params = {"reference": case.reference or "", **read.params}
        if read.decision.send in (Template.REVIEW_ASSIGNED, Template.EXPECTED_DATE_CHANGED):
            assert read.decision.then.told_due is not None
            params["due_date"] = read.decision.then.told_due.isoformat()
        return params

    async def _queue(
        self, case: CaseDoc, event: Event, template: Template, params: dict[str, str]
    ) -> None:
        """One queued send per notification: its id comes from the event, so a redelivery
        finds it queued already."""
        assert case.language is not None
        now = utcnow()
        send = SendDoc(
            id=rules.send_id(event.id),
            case_id=case.id,
            event_id=event.id,
            template=template,
            language=case.language,
            params=params,
            message_id=rules.message_id(event.id, self.settings.mail_domain),
            traceparent=case.traceparent or event.traceparent,
            created_at=now,
            next_at=now,
        )
        if not await self.store.queue(send):
            existing = await self.store.send(send.id)
            if existing is None or existing.status is not SendStatus.QUEUED:
                send = None  # type: ignore[assignment]
            else:
                send = existing
        if send is not None:
            await self._file(send.id, send.next_at or now)
            SENDS_QUEUED.labels(send.channel, template.value).inc()
            log.info("email queued", template=template.value, send_id=send.id)
        if rules.send_id(event.id) not in case.notifications:
            case.notifications.append(rules.send_id(event.id))

    # --- the sender ---------------------------------------------------------------------

    def wake(self, kind: str = "email") -> None:
        """Tell the sender (or the webhook worker) there is work."""
        self._wake[kind].set()

    async def _file(self, send_id: str, at: datetime, kind: str = "email") -> None:
        bucket = rules.bucket_of(at, self.settings.due_bucket_seconds)
        async with self._due[kind]:
            # Never behind the cursor: the sender walks forward from it.
            cursor = self._cursor[kind]
            if cursor is not None:
                bucket = max(bucket, cursor)
            await self.store.file(bucket, send_id, kind)

    async def run_sender(self) -> None:
        """Work the queue of emails for the life of the service."""
        await self._run("email", self.sender_pass)

    async def run_webhooks(self) -> None:
        """Work the queue of webhook deliveries for the life of the service, beside the emails'
        sender and never in its way."""
        await self._run("webhook", self.webhook_pass)

    async def _run(self, kind: str, work: Callable[[], Awaitable[float]]) -> None:
        """Whatever is due, then sleep until the next due time, a wake-up, or the tick."""
        retry = Backoff(self.settings.retry_backoff_max_seconds)
        while True:
            self._wake[kind].clear()
            try:
                wait = await work()
                retry.reset()
            except STORE_ERRORS as exc:
                wait = retry.next_delay()
                log.warning("sender waits for the store", error=type(exc).__name__)
            except Exception:
                # Whatever happened, the sender lives on: what was not recorded is still filed
                # and is tried again (with the same Message-ID).
                wait = retry.next_delay()
                log.exception("sender pass failed", queue=kind)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake[kind].wait(), timeout=wait)

    async def sender_pass(self) -> float:
        """Send what is due now; returns how long the sender may sleep."""
        return await self._pass("email", self._work)

    async def webhook_pass(self) -> float:
        """Start the webhook deliveries due now (each in a task of its own, within the
        concurrency limits); returns how long the worker may sleep."""
        return await self._pass("webhook", self._work_delivery)

    async def _pass(
        self, kind: str, work: Callable[[str, int], Awaitable[datetime | None]]
    ) -> float:
        size = self.settings.due_bucket_seconds
        now = utcnow()
        current = rules.bucket_of(now, size)
        async with self._due[kind]:
            cursor = await self.store.cursor(kind)
            if cursor is None:
                cursor = current
                await self.store.set_cursor(cursor, kind)
            self._cursor[kind] = cursor
        sleep = self.settings.sender_tick_seconds
        for bucket in range(cursor, current + 1):
            for send_id in await self.store.bucket(bucket, kind):
                pending = await work(send_id, bucket)
                if pending is not None:
                    sleep = min(sleep, max((pending - utcnow()).total_seconds(), 0.01))
        async with self._due[kind]:
            moved = cursor
            while moved < current and not await self.store.bucket(moved, kind):
                await self.store.drop_bucket(moved, kind)
                moved += 1
            if moved != cursor:
                await self.store.set_cursor(moved, kind)
            self._cursor[kind] = moved
        return sleep

    async def _unfile(self, bucket: int, send_id: str, kind: str = "email") -> None:
        async with self._due[kind]:
            await self.store.unfile(bucket, send_id, kind)

    async def _work(self, send_id: str, bucket: int) -> datetime | None:
        """Attempt one filed send if it is due; returns its due time if it is not yet."""
        send = await self.store.send(send_id)
        if send is None or send.status is not SendStatus.QUEUED:
            await self._unfile(bucket, send_id)  # done already (a crash before unfiling)
            return None
        now = utcnow()
        if send.next_at is not None and send.next_at > now:
            target = rules.bucket_of(send.next_at, self.settings.due_bucket_seconds)
            if target > bucket:  # filed early: move it where it belongs
                await self._file(send_id, send.next_at)
                await self._unfile(bucket, send_id)
                return None
            return send.next_at
        result = await self._attempt(send)
        await self._record(send, bucket, result)
        return None

    async def _attempt(self, send: SendDoc) -> Result:
        """One attempt, in the case's trace; the contact is opened here and nowhere else."""
        with case_span("notify.email.send", send.traceparent) as span:
            span.set_attribute("avis.case_id", send.case_id)
            span.set_attribute("avis.notification", send.template.value)
            span.set_attribute("avis.send_id", send.id)
            span.set_attribute("avis.attempt", len(send.attempts) + 1)
            if send.params.get("reference"):
                span.set_attribute("avis.case_reference", send.params["reference"])
            case = await self.store.case(send.case_id)
            if case is None or case.contact is None:
                result = Result(Outcome.PERMANENT, None, "no contact for the case")
            else:
                try:
                    contact = self.keyring.open_model(
                        case.contact, aad=contact_aad(case.id), model=PatientContact
                    )
                except SealingError:
                    result = Result(Outcome.PERMANENT, None, "contact cannot be opened")
                else:
                    message = compose(
                        template=send.template,
                        language=send.language,
                        params=send.params,
                        to=contact.email,
                        sender=self.settings.mail_from,
                        message_id=send.message_id,
                        queued_at=send.created_at,
                    )
                    result = await self.mailer.send(message)
            span.set_attribute("avis.send_outcome", result.outcome.value)
            if result.code is not None:
                span.set_attribute("smtp.reply_code", result.code)
            return result

    async def _record(self, send: SendDoc, bucket: int, result: Result) -> None:
        now = utcnow()
        attempt = Attempt(at=now, outcome=result.outcome, code=result.code, reason=result.reason)
        SEND_ATTEMPTS.labels(send.channel, send.template.value, result.outcome.value).inc()
        fields = {"send_id": send.id, "template": send.template.value, "code": result.code}
        if result.outcome is Outcome.SENT:
            await self.store.record_attempt(send.id, attempt, SendStatus.SENT, None, sent_at=now)
            await self._unfile(bucket, send.id)
            log.info("email sent", **fields)
            return
        failures = 1 + sum(a.outcome is Outcome.TRANSIENT for a in send.attempts)
        retry_at = None
        if result.outcome is Outcome.TRANSIENT:
            jitter = random.uniform(0.9, 1.1)  # noqa: S311
            retry_at = rules.next_attempt(failures, self.settings.retry_schedule, now, jitter)
        if retry_at is None:
            if result.outcome is Outcome.TRANSIENT:
                attempt.reason = f"{attempt.reason}; gave up after {failures} attempts"
            await self.store.record_attempt(send.id, attempt, SendStatus.FAILED, None)
            await self._unfile(bucket, send.id)
            SENDS_FAILED.labels(send.channel).inc()
            log.error("email failed", reason=attempt.reason, **fields)
            return
        await self.store.record_attempt(send.id, attempt, SendStatus.QUEUED, retry_at)
        await self._file(send.id, retry_at)
        if rules.bucket_of(retry_at, self.settings.due_bucket_seconds) != bucket:
            await self._unfile(bucket, send.id)
        log.warning("email retried", retry_at=retry_at.isoformat(), reason=result.reason, **fields)

    # --- partner webhooks: fan-out -------------------------------------------------------

    async def _fan_out(self, case: CaseDoc, event: Event, read: rules.Reading) -> int:
        """Queue one delivery per subscription of the case's partner that wants this event
        (only a case its partner filed, with the patient's consent to share)."""
        kind = rules.webhook_event(event.type)
        if kind is None or case.partner_id is None:
            return 0
        queued = 0
        for sub in await self.store.subscriptions_of(
            await self.store.partner_subscriptions(case.partner_id)
        ):
            if not sub.enabled or kind not in sub.event_types:
                continue
            if await self._queue_delivery(case, event, read, kind, sub):
                queued += 1
        return queued

    async def _queue_delivery(
        self,
        case: CaseDoc,
        event: Event,
        read: rules.Reading,
        kind: rules.WebhookEvent,
        sub: SubscriptionDoc,
    ) -> bool:
        link = read.link or case.case_url
        extra = read.extra
        body = rules.webhook_payload(
            event_id=event.id,
            event_type=kind,
            source=event.source,
            time=event.time,
            case_id=case.id,
            reference=case.reference,
            partner_reference=case.partner_reference,
            link=link,
            extra=extra,
        )
        now = utcnow()
        delivery = DeliveryDoc(
            id=rules.delivery_id(event.id, sub.id),
            subscription_id=sub.id,
            partner_id=sub.partner_id,
            case_id=case.id,
            event_id=event.id,
            event_type=kind,
            webhook_id=rules.webhook_id(event.id, sub.id),
            body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
            traceparent=case.traceparent or event.traceparent,
            created_at=now,
            next_at=now,
        )
        fresh = await self.store.queue_delivery(delivery)
        existing = delivery if fresh else await self.store.delivery(delivery.id)
        if existing is not None and existing.status is DeliveryStatus.QUEUED:
            await self._file(delivery.id, existing.next_at or now, "webhook")
        if delivery.id not in case.deliveries:
            case.deliveries.append(delivery.id)
        if fresh:
            async with self.locks.hold(f"subscription:{sub.id}"):
                current = await self.store.subscription(sub.id)
                if current is not None and delivery.id not in current.recent:
                    current.recent = [*current.recent, delivery.id][-RECENT_DELIVERIES:]
                    await self.store.save_subscription(current)
            log.info("webhook queued", delivery_id=delivery.id, subscription_id=sub.id)
        return fresh

    # --- partner webhooks: the worker ----------------------------------------------------

    async def _work_delivery(self, delivery_id: str, bucket: int) -> datetime | None:
        """Start one filed delivery if it is due and there is room for it; returns its due
        time if it is not due yet."""
        if delivery_id in self._inflight:
            return None
        delivery = await self.store.delivery(delivery_id)
        if delivery is None or delivery.status is not DeliveryStatus.QUEUED:
            await self._unfile(bucket, delivery_id, "webhook")
            return None
        now = utcnow()
        if delivery.next_at is not None and delivery.next_at > now:
            target = rules.bucket_of(delivery.next_at, self.settings.due_bucket_seconds)
            if target > bucket:
                await self._file(delivery_id, delivery.next_at, "webhook")
                await self._unfile(bucket, delivery_id, "webhook")
                return None
            return delivery.next_at
        sub_id = delivery.subscription_id
        if self._per_subscription[sub_id] >= self.settings.webhook_per_subscription:
            return None  # this partner has its share in flight; the others go on
        if self._slots.locked():
            return None
        await self._slots.acquire()
        self._per_subscription[sub_id] += 1
        task = asyncio.create_task(self._deliver_one(delivery, bucket))
        self._inflight[delivery_id] = task
        return None

    async def _deliver_one(self, delivery: DeliveryDoc, bucket: int) -> None:
        try:
            async with self.locks.hold(f"delivery:{delivery.id}"):
                await self._attempt_delivery(delivery, bucket)
        except Exception:
            log.exception("webhook attempt failed", delivery_id=delivery.id)
        finally:
            self._slots.release()
            self._per_subscription[delivery.subscription_id] -= 1
            self._inflight.pop(delivery.id, None)
            self.wake("webhook")

    async def _attempt_delivery(self, delivery: DeliveryDoc, bucket: int) -> None:
        current = await self.store.delivery(delivery.id)
        if current is None or current.status is not DeliveryStatus.QUEUED:
            await self._unfile(bucket, delivery.id, "webhook")
            return
        delivery = current
        sub = await self.store.subscription(delivery.subscription_id)
        if sub is None or not sub.enabled:
            why = "subscription deleted" if sub is None else "subscription disabled"
            await self._dead(delivery, bucket, why)
            return
        now = utcnow()
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
            answer = await self.webhooks.post(sub.url, delivery.body, headers)
            span.set_attribute("avis.send_outcome", answer.outcome.value)
            if answer.code is not None:
                span.set_attribute("http.response.status_code", answer.code)
        WEBHOOK_ATTEMPTS.labels(answer.outcome.value).inc()
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
        fields = {"delivery_id": delivery.id, "code": answer.code, "reason": answer.reason}
        if answer.outcome is Outcome.SENT:
            delivery.status, delivery.next_at, delivery.delivered_at = (
                DeliveryStatus.DELIVERED,
                None,
                utcnow(),
            )
            await self.store.save_delivery(delivery)
            await self._unfile(bucket, delivery.id, "webhook")
            await self._subscription_result(sub.id, ok=True, why="")
            log.info("webhook delivered", **fields)
            return
        if answer.outcome is Outcome.PERMANENT:
            await self._subscription_result(sub.id, ok=False, why=answer.reason, now_off=True)
            await self._dead(delivery, bucket, answer.reason, save_attempt=True)
            return
        failures = sum(a.outcome is not Outcome.SENT for a in delivery.attempts)
        jitter = random.uniform(0.5, 1.0)  # noqa: S311
        retry_at = rules.webhook_retry_at(
            failures,
            delivery.first_attempt_at,
            utcnow(),
            base=self.settings.webhook_retry_base_seconds,
            cap=self.settings.webhook_retry_max_delay_seconds,
            window=self.settings.webhook_retry_window_seconds,
            jitter=jitter,
        )
        await self._subscription_result(sub.id, ok=False, why=answer.reason)
        if retry_at is None:
            await self._dead(
                delivery, bucket, f"gave up after {failures} attempts", save_attempt=True
            )
            return
        delivery.next_at = retry_at
        await self.store.save_delivery(delivery)
        await self._file(delivery.id, retry_at, "webhook")
        if rules.bucket_of(retry_at, self.settings.due_bucket_seconds) != bucket:
            await self._unfile(bucket, delivery.id, "webhook")
        log.warning("webhook retried", retry_at=retry_at.isoformat(), **fields)

    async def _dead(
        self, delivery: DeliveryDoc, bucket: int, why: str, save_attempt: bool = False
    ) -> None:
        if not save_attempt:
            delivery.attempts.append(
                DeliveryAttempt(at=utcnow(), outcome=Outcome.PERMANENT, reason=why)
            )
        elif delivery.attempts:
            last = delivery.attempts[-1]
            if why != last.reason:
                last.reason = f"{last.reason}; {why}"
        delivery.status, delivery.next_at = DeliveryStatus.DEAD, None
        await self.store.save_delivery(delivery)
        await self._unfile(bucket, delivery.id, "webhook")
        WEBHOOKS_DEAD.inc()
        log.error("webhook dead", delivery_id=delivery.id, reason=why)

    async def _subscription_result(
        self, subscription_id: str, *, ok: bool, why: str, now_off: bool = False
    ) -> None:
        """Count failures in a row; disable the subscription when they are too many (or the
        endpoint said 410 Gone)."""
        async with self.locks.hold(f"subscription:{subscription_id}"):
            sub = await self.store.subscription(subscription_id)
            if sub is None:
                return
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
                    sub.disabled_at = utcnow()
                    sub.disabled_reason = (
                        f"the endpoint answered {why}"
                        if now_off
                        else f"{sub.consecutive_failures} failed attempts in a row (last: {why})"
                    )
                    log.warning("subscription disabled", subscription_id=sub.id)
            sub.updated_at = utcnow()
            await self.store.save_subscription(sub)

    def _live_secrets(self, sub: SubscriptionDoc, now: datetime) -> list[str]:
        """The secrets that sign now: the current one and any still in its grace period."""
        live = [s for s in sub.secrets if s.expires_at is None or s.expires_at > now]
        return [self.keyring.open(s.sealed, aad=secret_aad(sub.id, s.id)).decode() for s in live]

    # --- partner webhooks: subscriptions -------------------------------------------------

    def _new_secret(self, subscription_id: str, now: datetime) -> tuple[str, SecretDoc]:
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        secret_id = secrets.token_hex(8)
        sealed = self.keyring.seal(secret.encode(), aad=secret_aad(subscription_id, secret_id))
        return secret, SecretDoc(id=secret_id, sealed=sealed, created_at=now)

    async def _checked_url(self, url: str) -> str:
        try:
            await self.webhooks.check(url)
        except Refused as exc:
            raise Problem(
                422,
                "unsafe-webhook-url",
                "Webhook URL refused",
                f"The URL is refused: {exc}.",
            ) from None
        return url

    async def _visible(self, principal: Principal, subscription_id: str) -> SubscriptionDoc:
        sub = await self.store.subscription(subscription_id)
        if sub is None or not rules.may_see(principal, sub.partner_id):
            raise not_found("subscription")
        return sub

    async def _managed(self, principal: Principal, subscription_id: str) -> SubscriptionDoc:
        sub = await self.store.subscription(subscription_id)
        if sub is None or not rules.may_manage(principal, sub.partner_id):
            raise not_found("subscription")
        return sub

    async def subscribe(
        self, *, principal: Principal, request: SubscriptionIn
    ) -> SubscriptionCreated:
        """A partner subscribes an endpoint; the secret is in this answer and nowhere else."""
        partner_id = _partner_of(principal)
        url = await self._checked_url(request.url)
        now = utcnow()
        sub_id = f"sub_{secrets.token_hex(12)}"
        secret, sealed = self._new_secret(sub_id, now)
        sub = SubscriptionDoc(
            id=sub_id,
            partner_id=partner_id,
            url=url,
            event_types=list(dict.fromkeys(request.event_types)),
            description=request.description,
            secrets=[sealed],
            created_at=now,
            updated_at=now,
        )
        async with self.locks.hold(f"partner:{partner_id}"):
            await self.store.save_subscription(sub)
            await self.store.add_partner_subscription(partner_id, sub_id)
        log.info("subscription created", subscription_id=sub_id, partner_id=partner_id)
        return SubscriptionCreated(**Subscription.of(sub, now).model_dump(), secret=secret)

    async def subscriptions(
        self, *, principal: Principal, partner_id: str | None, cursor: str | None, limit: int
    ) -> SubscriptionPage:
        """A partner's subscriptions, oldest first, a page at a time."""
        if principal.role == "partner":
            partner_id = _partner_of(principal)
        elif partner_id is None:
            raise Problem(
                422,
                "partner-required",
                "Partner required",
                "Coordinators list one partner's subscriptions: give `partner_id`.",
            )
        ids = await self.store.partner_subscriptions(partner_id)
        start = int(cursor or 0)
        items = await self.store.subscriptions_of(ids[start : start + limit])
        now = utcnow()
        more = start + limit < len(ids)
        return SubscriptionPage(
            items=[Subscription.of(s, now) for s in items],
            next_cursor=str(start + limit) if more else None,
        )

    async def subscription(self, *, principal: Principal, subscription_id: str) -> Subscription:
        """One subscription (never its secret)."""
        return Subscription.of(await self._visible(principal, subscription_id), utcnow())

    async def update_subscription(
        self, *, principal: Principal, subscription_id: str, change: SubscriptionPatch
    ) -> Subscription:
        """Change the URL, the event types or the description; `enabled: true` re-enables a
        subscription that was disabled (and clears its failure count)."""
        await self._managed(principal, subscription_id)
        url = await self._checked_url(change.url) if change.url is not None else None
        async with self.locks.hold(f"subscription:{subscription_id}"):
            sub = await self._managed(principal, subscription_id)
            if url is not None:
                sub.url = url
            if change.event_types is not None:
                sub.event_types = list(dict.fromkeys(change.event_types))
            if change.description is not None:
                sub.description = change.description
            if change.enabled is True and not sub.enabled:
                sub.enabled, sub.disabled_reason, sub.disabled_at = True, None, None
                sub.consecutive_failures = 0
            elif change.enabled is False and sub.enabled:
                sub.enabled, sub.disabled_reason = False, "disabled by the partner"
                sub.disabled_at = utcnow()
            sub.updated_at = utcnow()
            await self.store.save_subscription(sub)
        return Subscription.of(sub, utcnow())

    async def rotate_secret(self, *, principal: Principal, subscription_id: str) -> SecretRotated:
        """A new secret, shown once; the previous one still signs for the grace period."""
        async with self.locks.hold(f"subscription:{subscription_id}"):
            sub = await self._managed(principal, subscription_id)
            now = utcnow()
            until = now + timedelta(seconds=self.settings.webhook_secret_grace_seconds)
            kept = []
            for old in sub.secrets:
                if old.expires_at is None:
                    old.expires_at = until
                if old.expires_at > now:
                    kept.append(old)
            secret, sealed = self._new_secret(sub.id, now)
            sub.secrets = [sealed, *kept]
            sub.updated_at = now
            await self.store.save_subscription(sub)
        return SecretRotated(secret=secret, previous_secrets_expire_at=until)

    async def unsubscribe(self, *, principal: Principal, subscription_id: str) -> None:
        """Delete a subscription; its queued deliveries die (and stay visible)."""
        sub = await self._managed(principal, subscription_id)
        async with self.locks.hold(f"partner:{sub.partner_id}"):
            await self.store.remove_partner_subscription(sub.partner_id, sub.id)
            async with self.locks.hold(f"subscription:{subscription_id}"):
                await self.store.delete_subscription(sub.id)
        log.info("subscription deleted", subscription_id=sub.id)

    # --- partner webhooks: deliveries ----------------------------------------------------

    async def deliveries(
        self, *, principal: Principal, subscription_id: str, cursor: str | None, limit: int
    ) -> DeliveryPage:
        """A subscription's latest deliveries, newest first, with every attempt."""
        sub = await self._visible(principal, subscription_id)
        ids = list(reversed(sub.recent))
        start = int(cursor or 0)
        items = await self.store.deliveries_of(ids[start : start + limit])
        more = start + limit < len(ids)
        return DeliveryPage(
            items=[Delivery.of(d) for d in items], next_cursor=str(start + limit) if more else None
        )

    async def _visible_delivery(self, principal: Principal, delivery_id: str) -> DeliveryDoc:
        delivery = await self.store.delivery(delivery_id)
        if delivery is None or not rules.may_see(principal, delivery.partner_id):
            raise not_found("delivery")
        return delivery

    async def delivery(self, *, principal: Principal, delivery_id: str) -> Delivery:
        """One delivery and its attempts."""
        return Delivery.of(await self._visible_delivery(principal, delivery_id))

    async def replay(self, *, principal: Principal, delivery_id: str) -> Delivery:
        """Queue a dead delivery again (the same `webhook-id`), with a fresh retry window."""
        await self._visible_delivery(principal, delivery_id)
        async with self.locks.hold(f"delivery:{delivery_id}"):
            delivery = await self._visible_delivery(principal, delivery_id)
            if delivery.status is not DeliveryStatus.DEAD:
                raise Problem(
                    409,
                    "not-dead",
                    "Not replayable",
                    f"Only a dead delivery can be replayed; this one is {delivery.status.value}.",
                )
            sub = await self.store.subscription(delivery.subscription_id)
            if sub is None or not sub.enabled:
                raise Problem(
                    409,
                    "subscription-disabled",
                    "Subscription not enabled",
                    "The subscription is disabled or deleted: re-enable it before replaying.",
                )
            now = utcnow()
            delivery.status, delivery.next_at = DeliveryStatus.QUEUED, now
            delivery.first_attempt_at, delivery.replays = None, delivery.replays + 1
            await self.store.save_delivery(delivery)
            await self._file(delivery.id, now, "webhook")
        self.wake("webhook")
        log.info("webhook replayed", delivery_id=delivery_id)
        return Delivery.of(delivery)

    # --- reading ------------------------------------------------------------------------

    async def _readable_case(self, principal: Principal, case_id: str) -> CaseDoc:
        case = await self.store.case(case_id)
        if case is None or not case.submitted or not rules.may_read(principal, case.patient_id):
            raise not_found("case")
        return case

    async def notifications(
        self, *, principal: Principal, case_id: str, cursor: str | None, limit: int
    ) -> NotificationPage:
        """A case's notifications, oldest first, a page at a time."""
        case = await self._readable_case(principal, case_id)
        start = int(cursor or 0)
        ids = case.notifications[start : start + limit]
        items = []
        for send_id in ids:
            send = await self.store.send(send_id)
            if send is not None:
                items.append(Notification.of(send))
        more = start + limit < len(case.notifications)
        return NotificationPage(items=items, next_cursor=str(start + limit) if more else None)

    async def notification(self, *, principal: Principal, notification_id: str) -> Notification:
        """One notification."""
        send = await self.store.send(notification_id)
        if send is None:
            raise not_found("notification")
        await self._readable_case(principal, send.case_id)
        return Notification.of(send)


def _partner_of(principal: Principal) -> str:
    """The partner a partner's token acts for (a token without one is refused)."""
    if principal.role != "partner" or not principal.partner_id:
        raise Problem(403, "forbidden", "Forbidden", "Only a partner's token manages webhooks.")
    return principal.partner_id
