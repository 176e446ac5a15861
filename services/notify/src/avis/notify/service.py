"""Use cases of the notify service: events become queued emails and webhook deliveries (or wait,
parked, for their case); partners manage their subscriptions and see and replay their
deliveries; coordinators and patients read a case's notifications. The sending is not here: the
email sender and the webhook worker work the due-queues this fills."""

import base64
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from prometheus_client import Counter

from avis.notify import rules
from avis.notify.models import (
    Delivery,
    DeliveryPage,
    DeliveryStatus,
    Notification,
    NotificationPage,
    Resealed,
    SecretRotated,
    SendStatus,
    Subscription,
    SubscriptionCreated,
    SubscriptionIn,
    SubscriptionPage,
    SubscriptionPatch,
    Template,
    WebhookEvent,
)
from avis.notify.queue import DueQueue, Filing, file_together
from avis.notify.sender import ErasedHere
from avis.notify.settings import Settings
from avis.notify.store import (
    CaseDoc,
    DeliveryDoc,
    Recipient,
    SecretDoc,
    SendDoc,
    Store,
    SubscriptionDoc,
    claim_aad,
    contact_aad,
    physician_aad,
    secret_aad,
)
from avis.notify.webhooks import Refused, WebhookClient
from avis.shared import clock
from avis.shared.case_keys import CaseKeyDestroyed, CaseKeys, key_ref_of
from avis.shared.envelope import Event, PoisonMessage
from avis.shared.events import (
    CaseErased,
    CaseSubmitted,
    ClaimSecret,
    Language,
    Payload,
    PhysicianContact,
)
from avis.shared.mongo import AggregateLocks, lock_key
from avis.shared.observability import case_span
from avis.shared.parking import Parking
from avis.shared.problems import Problem, not_found
from avis.shared.sealing import Sealed, SealingError
from avis.shared.security import Principal

log = structlog.get_logger("avis.notify")

SENDS_QUEUED = Counter("avis_notify_queued_total", "Notifications queued", ["channel", "template"])
RECENT_DELIVERIES = 200  # a subscription lists its latest deliveries, no more


class NotifyService:
    """Notify's use cases: from events to queued emails and webhook deliveries, partners'
    subscriptions and deliveries, and reading a case's notifications."""

    def __init__(
        self,
        *,
        store: Store,
        locks: AggregateLocks,
        keys: CaseKeys,
        settings: Settings,
        parking: Parking,
        webhooks: WebhookClient,
        email_queue: DueQueue[SendDoc],
        webhook_queue: DueQueue[DeliveryDoc],
        fhir_queue: DueQueue[SendDoc],
        erased: ErasedHere | None = None,
    ) -> None:
        self.store = store
        # The cases whose erasure began in this process: their sends read their case again.
        self.erased = erased or ErasedHere()
        self.locks = locks
        self.settings = settings
        self.parking = parking
        # A case's contact and claim secret are sealed under its own key; the webhooks' signing
        # secrets belong to no case: under the service's keyring.
        self.keys = keys
        self.keyring = keys.keyring
        self.webhooks = webhooks  # checks a subscription's URL
        self.email_queue = email_queue
        self.webhook_queue = webhook_queue
        self.fhir_queue = fhir_queue  # the physicians' copies posted as FHIR documents
        self.tz = ZoneInfo(settings.timezone)

    # --- events -------------------------------------------------------------------------

    async def case_submitted(self, *, event: Event, payload: CaseSubmitted) -> None:
        """The case arrives: keep its contact sealed, tell the patient, then release the events
        parked before it, in the order they happened (several topics are not ordered)."""
        async with self.locks.hold(lock_key("case", payload.case_id)):
            case = await self.store.case(payload.case_id) or CaseDoc(id=payload.case_id)
            if _applied_already(case, event):
                await refile(self, case)
                return
            if not case.submitted and case.erased_at is None:
                await take_contact(self.keys, case, event, payload)
            filings: list[Filing[Any]] = []
            queued = await self._apply(case, event, payload, filings)
            parked, case.parked = case.parked, []
            for entry in sorted(parked, key=lambda e: Event.from_doc(e).time):
                early = Event.from_doc(entry)
                queued += await self._apply(case, early, early.payload(), filings)
            # Stored before its sends are handed off: their sender opens the contact.
            await self._save(case, queued)
            await file_together(filings)
            if parked:
                await self.parking.release(case.id)

    async def apply(self, *, event: Event, payload: Payload) -> None:
        """Apply one event to its case: park it, or decide and queue its email."""
        async with self.locks.hold(lock_key("case", payload.case_id)):
            case = await self.store.case(payload.case_id) or CaseDoc(id=payload.case_id)
            if _applied_already(case, event):
                await refile(self, case)
                return
            filings: list[Filing[Any]] = []
            await self._save(case, await self._apply(case, event, payload, filings))
            await file_together(filings)

    async def expire_parked(self, case_id: str, give_up: Callable[[], Awaitable[None]]) -> bool:
        """The case never came: drop the events parked on it and dead-letter them (`give_up`);
        False if it is known by now, and nothing is dropped."""
        async with self.locks.hold(lock_key("case", case_id)):
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
        case.updated_at = clock.now()
        await self.store.save_case(case)
        if queued:
            self.email_queue.wake()
            self.webhook_queue.wake()
            self.fhir_queue.wake()

    async def _apply(
        self, case: CaseDoc, event: Event, payload: Payload, filings: list[Filing[Any]]
    ) -> int:
        """Apply one event to the case in memory: park it, or queue what it decides (its
        filings added to `filings`, handed off once the case is written); how many queued."""
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
            if event.id not in case.applied:  # saved with what it changed and queued
                case.applied.append(event.id)
            view = decision.then
            case.submitted, case.withdrawn = view.submitted, view.withdrawn
            case.told_due, case.report_version = view.told_due, view.report_version
            case.told_abroad = view.told_abroad
            case.patient_id = view.patient_id
            span.set_attribute("avis.notify.decision", decision.send or f"none: {decision.why}")
            deliveries = await fan_out(self, case, event, read) if decision.hooks else []
            sends: list[SendDoc] = []
            if decision.send is not None:
                params = rules.email_params(case.reference, read)
                sends.append(self._send(case, event, decision.send, params))
                if rules.physician_copy(decision.send, has_physician=case.physician is not None):
                    template = Template.PHYSICIAN_REPORT
                    sends.append(self._send(case, event, template, params, to="physician"))
            if not sends and not deliveries:
                return 0
            # Every one on the calendar first, in one request; then each queued (handed off to
            # their queues' workers by the caller once the case is written, in one request).
            await self.store.keep_queued(sends, [delivery for delivery, _ in deliveries])
            hooks = 0
            for delivery, sub in deliveries:
                fresh, hook = await self._queue_delivery(case, delivery, sub)
                hooks += fresh
                filings += [hook] if hook is not None else []
            for send in sends:
                filing = await self._queue(case, send.handed_with(case), kept=True)
                filings += [filing] if filing is not None else []
            return len(sends) + hooks

    def _send(
        self,
        case: CaseDoc,
        event: Event,
        template: Template,
        params: dict[str, str],
        *,
        to: str = "email",
    ) -> SendDoc:
        """One send per notification and recipient (`to`: the patient's "email", or the
        "physician"): its id comes from the event, so a redelivery finds it queued already."""
        language = case.physician_language if to == "physician" else case.language
        assert language is not None
        now = clock.now()
        send_id = rules.send_id(event.id, to)
        mark = event.id if to == "email" else f"{event.id}.{to}"
        # The physician's institution takes reports at a FHIR endpoint: posted there instead.
        institution = case.physician_institution if to == "physician" else None
        posted = rules.fhir_endpoint(self.settings.physician_fhir_endpoints, institution)
        return SendDoc(
            id=send_id,
            channel="email" if posted is None else "fhir",
            institution=None if posted is None else institution,
            case_id=case.id,
            event_id=event.id,
            template=template,
            language=language,
            params=params,
            message_id=rules.message_id(mark, self.settings.mail_domain),
            traceparent=case.traceparent or event.traceparent,
            created_at=now,
            next_at=now,
        )

    async def _queue(
        self, case: CaseDoc, send: SendDoc, *, kept: bool = False
    ) -> Filing[SendDoc] | None:
        """Queue a send (on the calendar if `kept`), or find it queued already; its filing
        (None: done with already), for the caller to file."""
        found = send if await self.store.queue(send, kept=kept) else await self.store.send(send.id)
        filing = None
        if found is not None and found.status is SendStatus.QUEUED:
            queue = self.fhir_queue if found.channel == "fhir" else self.email_queue
            filing = queue.filing(found.id, found.next_at or send.created_at, found)
            SENDS_QUEUED.labels(found.channel, send.template.value).inc()
            what = "fhir post queued" if found.channel == "fhir" else "email queued"
            log.info(what, template=send.template.value, send_id=found.id)
        if send.id not in case.notifications:
            case.notifications.append(send.id)
        return filing

    # --- partner webhooks: fan-out -------------------------------------------------------

    async def _queue_delivery(
        self, case: CaseDoc, delivery: DeliveryDoc, sub: SubscriptionDoc
    ) -> tuple[bool, Filing[DeliveryDoc] | None]:
        """Queue a delivery (on the calendar), or find it queued already; whether it is new,
        and its filing (None: done with already), for the caller to file."""
        fresh = await self.store.queue_delivery(delivery, kept=True)
        existing = delivery if fresh else await self.store.delivery(delivery.id)
        filing = None
        if existing is not None and existing.status is DeliveryStatus.QUEUED:
            at = existing.next_at or delivery.created_at
            filing = self.webhook_queue.filing(delivery.id, at, existing)
        if delivery.id not in case.deliveries:
            case.deliveries.append(delivery.id)
        if fresh:
            log.info("webhook queued", delivery_id=delivery.id, subscription_id=sub.id)
        return fresh, filing

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

    async def _subscription(
        self, principal: Principal, subscription_id: str, *, manage: bool = False
    ) -> SubscriptionDoc:
        """The subscription if the caller may see it (or manage it); else the same 404."""
        sub = await self.store.subscription(subscription_id)
        may = rules.may_manage if manage else rules.may_see
        if sub is None or not may(principal, sub.partner_id):
            raise not_found("subscription")
        return sub

    async def subscribe(
        self, *, principal: Principal, request: SubscriptionIn
    ) -> SubscriptionCreated:
        """A partner subscribes an endpoint; the secret is in this answer and nowhere else."""
        partner_id = _partner_of(principal)
        url = await self._checked_url(request.url)
        now = clock.now()
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
        async with self.locks.hold(lock_key("partner", partner_id)):
            # Counted under the partner's lock: two requests at once cannot both take the last.
            most = self.settings.webhook_max_subscriptions
            if len(await self.store.partner_subscriptions(partner_id)) >= most:
                raise Problem(
                    422,
                    "too-many-subscriptions",
                    "Too many subscriptions",
                    f"A partner may have at most {most} subscriptions; delete one first.",
                )
            await self.store.save_subscription(sub)
            await self.store.add_partner_subscription(partner_id, sub_id)
        log.info("subscription created", subscription_id=sub_id, partner_id=partner_id)
        return sub.created(now, secret)

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
        ids, next_cursor = rules.window(
            await self.store.partner_subscriptions(partner_id), cursor, limit
        )
        now = clock.now()
        items = [s.view(now) for s in await self.store.subscriptions_of(ids)]
        return SubscriptionPage(items=items, next_cursor=next_cursor)

    async def subscription(self, *, principal: Principal, subscription_id: str) -> Subscription:
        """One subscription (never its secret)."""
        return (await self._subscription(principal, subscription_id)).view(clock.now())

    async def update_subscription(
        self, *, principal: Principal, subscription_id: str, change: SubscriptionPatch
    ) -> Subscription:
        """Change the URL, the event types or the description; `enabled: true` re-enables a
        subscription that was disabled (and clears its failure count)."""
        await self._subscription(principal, subscription_id, manage=True)
        url = await self._checked_url(change.url) if change.url is not None else None
        async with self.locks.hold(lock_key("subscription", subscription_id)):
            sub = await self._subscription(principal, subscription_id, manage=True)
            before = sub.model_copy(deep=True)
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
                sub.disabled_at = clock.now()
            sub.updated_at = clock.now()
            await self.store.save_subscription(sub, before)
        return sub.view(clock.now())

    async def rotate_secret(self, *, principal: Principal, subscription_id: str) -> SecretRotated:
        """A new secret, shown once; the previous one still signs for the grace period."""
        async with self.locks.hold(lock_key("subscription", subscription_id)):
            sub = await self._subscription(principal, subscription_id, manage=True)
            before = sub.model_copy(deep=True)
            now = clock.now()
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
            await self.store.save_subscription(sub, before)
        return SecretRotated(secret=secret, previous_secrets_expire_at=until)

    async def unsubscribe(self, *, principal: Principal, subscription_id: str) -> None:
        """Delete a subscription; its queued deliveries die (and stay visible)."""
        sub = await self._subscription(principal, subscription_id, manage=True)
        async with self.locks.hold(lock_key("partner", sub.partner_id)):
            await self.store.remove_partner_subscription(sub.partner_id, sub.id)
            async with self.locks.hold(lock_key("subscription", subscription_id)):
                await self.store.delete_subscription(sub.id)
        log.info("subscription deleted", subscription_id=sub.id)

    # --- partner webhooks: deliveries ----------------------------------------------------

    async def deliveries(
        self, *, principal: Principal, subscription_id: str, cursor: str | None, limit: int
    ) -> DeliveryPage:
        """A subscription's latest deliveries, newest first, with every attempt."""
        sub = await self._subscription(principal, subscription_id)
        ids, next_cursor = rules.window(list(reversed(sub.recent)), cursor, limit)
        items = [d.view() for d in await self.store.deliveries_of(ids)]
        return DeliveryPage(items=items, next_cursor=next_cursor)

    async def _visible_delivery(self, principal: Principal, delivery_id: str) -> DeliveryDoc:
        delivery = await self.store.delivery(delivery_id)
        if delivery is None or not rules.may_see(principal, delivery.partner_id):
            raise not_found("delivery")
        return delivery

    async def delivery(self, *, principal: Principal, delivery_id: str) -> Delivery:
        """One delivery and its attempts."""
        return (await self._visible_delivery(principal, delivery_id)).view()

    async def replay(self, *, principal: Principal, delivery_id: str) -> Delivery:
        """Queue a dead delivery again (the same `webhook-id`), with a fresh retry window."""
        await self._visible_delivery(principal, delivery_id)
        async with self.locks.hold(lock_key("delivery", delivery_id)):
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
            now = clock.now()
            delivery.status, delivery.next_at = DeliveryStatus.QUEUED, now
            delivery.first_attempt_at, delivery.replays = None, delivery.replays + 1
            await self.store.replay_delivery(delivery, now)
            await self.webhook_queue.file(delivery.id, now)
        self.webhook_queue.wake()
        log.info("webhook replayed", delivery_id=delivery_id)
        return delivery.view()

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
        ids, next_cursor = rules.window(
            rules.patients_notifications(case.notifications), cursor, limit
        )
        items = []
        for send_id in ids:
            send = await self.store.send(send_id)
            if send is not None:
                items.append(send.view())
        return NotificationPage(items=items, next_cursor=next_cursor)

    async def notification(self, *, principal: Principal, notification_id: str) -> Notification:
        """One notification."""
        send = await self.store.send(notification_id)
        if send is None or send.recipient is not None:  # a professional's: not the case's
            raise not_found("notification")
        await self._readable_case(principal, send.case_id)
        return send.view()


async def take_contact(keys: CaseKeys, case: CaseDoc, event: Event, payload: CaseSubmitted) -> None:
    """Open the contact (and a claim secret) sealed for the event, keep only its language in
    clear and only its address and language sealed (a `Recipient`), under the case's key and
    notify's own associated data (the case); CaseKeyDestroyed once the case is erased."""
    key_ref = payload.key_ref or key_ref_of(payload.contact)
    ring = await keys.ring(key_ref)
    try:  # the case's ring opens what is sealed under its key (or a service key)
        contact = ring.open_model(payload.contact, aad=event.id, model=Recipient)
        claim = (
            ring.open_model(payload.claim, aad=event.id, model=ClaimSecret)
            if payload.claim is not None
            else None
        )
        physician = (
            ring.open_model(payload.physician, aad=event.id, model=PhysicianContact)
            if payload.physician is not None
            else None
        )
    except SealingError as exc:
        raise PoisonMessage(f"sealed content cannot be opened: {exc}") from None
    case.key_ref = key_ref
    case.contact = ring.seal_json(contact, aad=contact_aad(case.id))
    if claim is not None:
        case.claim = ring.seal_json(claim, aad=claim_aad(case.id))
    if physician is not None:
        case.physician = ring.seal_json(physician, aad=physician_aad(case.id))
        case.physician_language = physician.language
        case.physician_institution = payload.physician_institution
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


class CaseErasure:
    """The erasure of a case (`avis.case.erased.v1`, after intake destroyed its key): notify
    drops its copy of the key, its contact and claim secret and what was parked for it, cancels
    its emails still queued (none is sent after), and keeps its ids, codes and times. With the
    event's notice (the patient's address under a key of its own), it queues the one email that
    tells the patient it is done; the sender destroys that key once the email is done with."""

    def __init__(self, notify: NotifyService) -> None:
        self.notify = notify
        self.store = notify.store
        self.locks = notify.locks
        self.keys = notify.keys
        self.parking = notify.parking

    async def case_erased(self, *, event: Event, erasure: CaseErased) -> None:
        """Erase what notify keeps of the case; a redelivery finds it done."""
        case_id = erasure.case_id
        async with self.locks.hold(lock_key("case", case_id)):
            case = await self.store.case(case_id) or CaseDoc(id=case_id)
            key_ref = erasure.key_ref or case.key_ref
            self.keys.forget(key_ref)
            parked = bool(case.parked)
            if case.erased_at is None:
                # Opened before anything is written: a key service away retries the event.
                notice = await self._notice(event, erasure)
                self.notify.erased.began(case_id)  # before the case is written erased
                case.key_ref, case.erased_at = key_ref, erasure.erased_at
                case.contact = case.claim = case.physician = None
                case.parked, case.updated_at = [], clock.now()
                if notice is not None:
                    case.contact, case.language = notice
                    case.notice_send = rules.send_id(event.id)
                    case.notifications.append(case.notice_send)
                # Stored before its email is queued: the sender opens the address, at once.
                await self.store.save_case(case)
            if case.notice_send == rules.send_id(event.id) and case.contact is not None:
                # Queued again by a redelivery that finds it so (a crash before it was queued).
                params = {"reference": case.reference or ""}
                told = self.notify._send(case, event, Template.ERASURE_DONE, params)
                filing = await self.notify._queue(case, told)
                await file_together([filing] if filing is not None else [])
                self.notify.email_queue.wake()
            cancelled = 0
            for send_id in rules.cancelled_by_erasure(case.notifications, case.notice_send):
                # The send's lock: an attempt in flight ends (sent) before it is cancelled.
                async with self.locks.hold(lock_key("send", send_id)):
                    cancelled += await self.store.cancel_send(send_id)
        if parked:
            await self.parking.release(case_id)
        log.info("case erased", case_id=case_id, cancelled=cancelled)

    async def _notice(self, event: Event, erasure: CaseErased) -> tuple[Sealed, Language] | None:
        """The patient's address from the event's notice, sealed again under the notice's own
        key (its ring seals under it) and notify's associated data; None without a notice, or
        with one that no longer opens (its key destroyed already: nothing is sent)."""
        if erasure.notice is None:
            return None
        try:
            ring = await self.keys.opening(erasure.notice)
            contact = ring.open_model(erasure.notice, aad=event.id, model=Recipient)
        except (CaseKeyDestroyed, SealingError) as exc:
            log.warning("erasure notice cannot be opened", case_id=erasure.case_id, error=str(exc))
            return None
        return ring.seal_json(contact, aad=contact_aad(erasure.case_id)), contact.preferred_language


async def fan_out(
    notify: NotifyService, case: CaseDoc, event: Event, read: rules.Reading
) -> list[tuple[DeliveryDoc, SubscriptionDoc]]:
    """One delivery per subscription of the case's partner that wants this event (only a case
    its partner filed, with the patient's consent to share)."""
    event_type = rules.webhook_event(event.type)
    if event_type is None or case.partner_id is None:
        return []
    store, deliveries = notify.store, []
    for sub_id in await store.partner_subscriptions(case.partner_id):
        # Its read is the note of the delivery among its latest, in one request, before the
        # delivery is queued: a stop in between leaves an id that lists nothing (until the
        # redelivery queues it); two fan-outs at once may leave it one over, for a while.
        async with notify.locks.hold(lock_key("subscription", sub_id)):
            delivery_id = rules.delivery_id(event.id, sub_id)
            sub = await store.take_delivery(sub_id, delivery_id, event_type)
            if sub is None:  # disabled, not wanting the event, or gone
                continue
            drop = rules.fallen_out(sub.recent, RECENT_DELIVERIES)
            await store.drop_recent(sub.id, drop)
            sub.recent = [r for r in sub.recent if r not in drop]
        deliveries.append((_delivery(case, event, read, event_type, sub).queued_for(sub), sub))
    return deliveries


async def refile(notify: NotifyService, case: CaseDoc) -> None:
    """An event applied already, redelivered: its effect is stored, but the run that stored
    it may have stopped between the case's write and the hand-offs that follow it, so whatever
    of the case is still queued is handed off again (twice changes nothing: its worker finds
    it worked already, or files it where it is due)."""
    filings: list[Filing[Any]] = []
    for send in await notify.store.sends_of(case.notifications):
        if send.status is SendStatus.QUEUED:
            queue = notify.fhir_queue if send.channel == "fhir" else notify.email_queue
            filings.append(queue.filing(send.id, send.next_at or send.created_at, send))
    for delivery in await notify.store.deliveries_of(case.deliveries):
        if delivery.status is DeliveryStatus.QUEUED:
            at = delivery.next_at or delivery.created_at
            filings.append(notify.webhook_queue.filing(delivery.id, at, delivery))
    await file_together(filings)


def _applied_already(case: CaseDoc, event: Event) -> bool:
    """Whether the event was applied to its case already (a redelivery: nothing to decide).
    The case records it in the same write as what the event changed, after its sends and
    deliveries are queued, so a redelivery that finds it finds every one of them."""
    if event.id not in case.applied:
        return False
    log.info("event applied already: turned away", type=event.type)
    return True


def _delivery(
    case: CaseDoc,
    event: Event,
    read: rules.Reading,
    event_type: WebhookEvent,
    sub: SubscriptionDoc,
) -> DeliveryDoc:
    """One delivery of the event to one subscription: its id comes from both, so a
    redelivery finds it queued already."""
    body = rules.webhook_payload(
        event_id=event.id,
        event_type=event_type,
        source=event.source,
        time=event.time,
        case_id=case.id,
        reference=case.reference,
        partner_reference=case.partner_reference,
        link=read.link or case.case_url,
        extra=read.extra,
        status=read.status,
    )
    now = clock.now()
    return DeliveryDoc(
        id=rules.delivery_id(event.id, sub.id),
        subscription_id=sub.id,
        partner_id=sub.partner_id,
        case_id=case.id,
        event_id=event.id,
        event_type=event_type,
        webhook_id=rules.webhook_id(event.id, sub.id),
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        traceparent=case.traceparent or event.traceparent,
        created_at=now,
        next_at=now,
    )


def _partner_of(principal: Principal) -> str:
    """The partner a partner's token acts for (a token without one is refused)."""
    if principal.role != "partner" or not principal.partner_id:
        raise Problem(403, "forbidden", "Forbidden", "Only a partner's token manages webhooks.")
    return principal.partner_id


class SecretResealing:
    """After a rotation of the keyring: the webhook secrets still sealed under an earlier key,
    sealed again under the sealing key (the first), so that the earlier key has no use left
    (`avis-keys in-use`) and can leave AVIS_SEALING_KEYS. It reads every subscription: an
    operator's step (POST /v1/webhook-secrets/reseal), never a hot path."""

    def __init__(self, notify: NotifyService) -> None:
        self.notify = notify

    async def reseal(self) -> Resealed:
        """Seal again what an earlier key sealed; each subscription under its lock."""
        keyring, store = self.notify.keyring, self.notify.store
        resealed = 0
        for subscription_id in await store.subscription_ids():
            async with self.notify.locks.hold(lock_key("subscription", subscription_id)):
                sub = await store.subscription(subscription_id)
                if sub is None:
                    continue
                before = sub.model_copy(deep=True)
                stale = [s for s in sub.secrets if s.sealed.kid != keyring.primary_kid]
                for secret in stale:
                    aad = secret_aad(sub.id, secret.id)
                    secret.sealed = keyring.seal(self._opened(secret.sealed, aad), aad)
                if stale:
                    await store.save_subscription(sub, before)
                    resealed += len(stale)
        log.info("webhook secrets sealed again", resealed=resealed, key_id=keyring.primary_kid)
        return Resealed(resealed=resealed, key_id=keyring.primary_kid)

    def _opened(self, sealed: Sealed, aad: str) -> bytes:
        """A secret opened; 409 when its key has already left the keyring."""
        try:
            return self.notify.keyring.open(sealed, aad)
        except SealingError:
            raise Problem(
                409,
                "key-not-in-keyring",
                "A webhook secret's key is not in the keyring",
                f"a webhook secret is sealed under key {sealed.kid}, which AVIS_SEALING_KEYS no "
                "longer holds: put it back after the new first key, then seal again",
            ) from None
