"""Use cases of the notify service: events become queued emails (or wait, parked, for their
case), and the sender works the queue; reading a case's notifications."""

import asyncio
import contextlib
import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import structlog
from prometheus_client import Counter
from pymongo.errors import PyMongoError

from avis.notify import rules
from avis.notify.emails import compose
from avis.notify.mailer import Mailer, Result, SmtpTarget
from avis.notify.models import Notification, NotificationPage
from avis.notify.rules import Decision, Outcome, SendStatus, Template
from avis.notify.settings import Settings
from avis.notify.store import Attempt, CaseDoc, SendDoc, Store, contact_aad
from avis.shared.envelope import Event, PoisonMessage
from avis.shared.events import (
    CaseSubmitted,
    CaseWithdrawn,
    PatientContact,
    Payload,
    ReportReady,
    ReviewAssigned,
)
from avis.shared.observability import case_span
from avis.shared.problems import Problem
from avis.shared.retry import Backoff
from avis.shared.runtime import Runtime
from avis.shared.sealing import Keyring, SealingError
from avis.shared.security import Principal

log = structlog.get_logger("avis.notify")

SENDS_QUEUED = Counter("avis_notify_queued_total", "Notifications queued", ["channel", "template"])
SEND_ATTEMPTS = Counter(
    "avis_notify_attempts_total", "Attempts to send, by outcome", ["channel", "template", "outcome"]
)
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

    def __init__(self, runtime: Runtime, settings: Settings, mailer: Mailer | None = None) -> None:
        self.runtime = runtime
        self.settings = settings
        self.store = Store(runtime.db)
        self.keyring = Keyring.from_settings(settings)
        self.mailer = mailer or Mailer(SmtpTarget.from_settings(settings))
        self.tz = ZoneInfo(settings.timezone)
        self._due = asyncio.Lock()  # every write to the due-queue's bucket documents
        self._wake = asyncio.Event()
        self._cursor: int | None = None

    # --- events -------------------------------------------------------------------------

    async def apply(self, *, event: Event, payload: Payload) -> None:
        """Apply one event to its case: park it, or decide and queue its email."""
        case_id = payload.case_id
        async with self.runtime.locks.hold(f"case:{case_id}"):
            case = await self.store.case(case_id) or CaseDoc(id=case_id)
            queued = await self._apply(case, event, payload)
            if isinstance(payload, CaseSubmitted) and case.parked:
                # The events that came before their case, in the order they happened (they
                # came on several topics, which are not ordered among themselves).
                parked, case.parked = case.parked, []
                for entry in sorted(parked, key=lambda e: Event.from_doc(e).time):
                    early = Event.from_doc(entry)
                    queued += await self._apply(case, early, early.payload())
            case.updated_at = utcnow()
            await self.store.save_case(case)
        if queued:
            self.wake()

    async def _apply(self, case: CaseDoc, event: Event, payload: Payload) -> int:
        if isinstance(payload, CaseSubmitted) and not case.submitted:
            self._take_contact(case, event, payload)
            # Stored before any send is queued: the sender opens it, and may run at once.
            await self.store.save_case(case)
        decision = self._decide(case, payload)
        name = f"notify.{event.type.removeprefix('avis.').removesuffix('.v1')}"
        with case_span(name, case.traceparent or event.traceparent) as span:
            span.set_attribute("avis.case_id", case.id)
            span.set_attribute("avis.event_id", event.id)
            if case.reference:
                span.set_attribute("avis.case_reference", case.reference)
            if decision.park:
                if all(p.get("id") != event.id for p in case.parked):
                    case.parked.append(event.to_doc())
                span.set_attribute("avis.notify.decision", "parked")
                log.info("event parked until its case arrives", type=event.type)
                return 0
            view = decision.then
            case.submitted, case.withdrawn = view.submitted, view.withdrawn
            case.told_due, case.report_version = view.told_due, view.report_version
            span.set_attribute("avis.notify.decision", decision.send or f"none: {decision.why}")
            if decision.send is None:
                return 0
            await self._queue(case, event, decision.send, self._params(case, decision, payload))
            return 1

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

    def _decide(self, case: CaseDoc, payload: Payload) -> Decision:
        view = case.view
        if isinstance(payload, CaseSubmitted):
            return rules.on_submitted(view)
        if isinstance(payload, ReviewAssigned):
            return rules.on_assigned(view, payload.due_at.astimezone(self.tz).date())
        if isinstance(payload, ReportReady):
            return rules.on_report_ready(view, payload.version)
        if isinstance(payload, CaseWithdrawn):
            return rules.on_withdrawn(view)
        return Decision(then=view, why="not a notified event")

    @staticmethod
    def _params(case: CaseDoc, decision: Decision, payload: Payload) -> dict[str, str]:
        """What the email needs: codes, dates and links, never a name or clinical text."""
        params = {"reference": case.reference or ""}
        if isinstance(payload, CaseSubmitted):
            params["case_url"] = payload.case_url
        if isinstance(payload, ReviewAssigned):
            params["specialty"] = payload.specialty.value
        if decision.send in (Template.REVIEW_ASSIGNED, Template.EXPECTED_DATE_CHANGED):
            assert decision.then.told_due is not None
            params["due_date"] = decision.then.told_due.isoformat()
        if isinstance(payload, ReportReady):
            params["report_url"] = payload.report_url
            params["version"] = str(payload.version)
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

    def wake(self) -> None:
        """Tell the sender there is work."""
        self._wake.set()

    async def _file(self, send_id: str, at: datetime) -> None:
        bucket = rules.bucket_of(at, self.settings.due_bucket_seconds)
        async with self._due:
            # Never behind the cursor: the sender walks forward from it.
            if self._cursor is not None:
                bucket = max(bucket, self._cursor)
            await self.store.file(bucket, send_id)

    async def run_sender(self) -> None:
        """Work the queue for the life of the service: whatever is due, then sleep until the
        next due time, a wake-up, or the tick."""
        retry = Backoff(self.settings.retry_backoff_max_seconds)
        while True:
            self._wake.clear()
            try:
                wait = await self.sender_pass()
                retry.reset()
            except PyMongoError as exc:
                wait = retry.next_delay()
                log.warning("sender waits for the store", error=type(exc).__name__)
            except Exception:
                # Whatever happened, the sender lives on: what was not recorded is still filed
                # and is tried again (with the same Message-ID).
                wait = retry.next_delay()
                log.exception("sender pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def sender_pass(self) -> float:
        """Send what is due now; returns how long the sender may sleep."""
        size = self.settings.due_bucket_seconds
        now = utcnow()
        current = rules.bucket_of(now, size)
        async with self._due:
            cursor = await self.store.cursor()
            if cursor is None:
                cursor = current
                await self.store.set_cursor(cursor)
            self._cursor = cursor
        sleep = self.settings.sender_tick_seconds
        for bucket in range(cursor, current + 1):
            for send_id in await self.store.bucket(bucket):
                pending = await self._work(send_id, bucket)
                if pending is not None:
                    sleep = min(sleep, max((pending - utcnow()).total_seconds(), 0.01))
        async with self._due:
            moved = cursor
            while moved < current and not await self.store.bucket(moved):
                await self.store.drop_bucket(moved)
                moved += 1
            if moved != cursor:
                await self.store.set_cursor(moved)
            self._cursor = moved
        return sleep

    async def _unfile(self, bucket: int, send_id: str) -> None:
        async with self._due:
            await self.store.unfile(bucket, send_id)

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
