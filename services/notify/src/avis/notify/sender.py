"""The email sender: the channel of the emails' due-queue. One attempt opens the case's sealed
contact, composes the email in the patient's language and hands it to the mailer; what came of
it is recorded on the send, and a transient failure is tried again on the retry schedule. An
email of a case erased (its key destroyed) is cancelled, never sent; but the one that tells the
patient the erasure is done, to the address under a key of its own, whose key is destroyed once
that email is sent or given up."""

import random
from contextlib import AbstractAsyncContextManager
from datetime import datetime

import structlog
from prometheus_client import Counter

from avis.notify import rules
from avis.notify.emails import compose
from avis.notify.mailer import Mailer, Result
from avis.notify.models import Outcome, SendStatus, Template
from avis.notify.settings import Settings
from avis.notify.store import (
    Attempt,
    CaseDoc,
    Recipient,
    SendDoc,
    Store,
    claim_aad,
    contact_aad,
    physician_aad,
    recipient_aad,
)
from avis.shared import clock
from avis.shared.case_keys import CaseKeyDestroyed, CaseKeys, key_ref_of
from avis.shared.emit import Emitter
from avis.shared.events import (
    ClaimSecret,
    PhysicianContact,
    PhysicianCopySent,
    ProfessionalContact,
)
from avis.shared.mongo import AggregateLocks, lock_key
from avis.shared.observability import case_span, stage_reached
from avis.shared.sealing import Keyring, Sealed, SealingError

log = structlog.get_logger("avis.notify")

SEND_ATTEMPTS = Counter(
    "avis_notify_attempts_total", "Attempts to send, by outcome", ["channel", "template", "outcome"]
)
SENDS_FAILED = Counter(
    "avis_notify_failed_total", "Sends given up: refused for good or retries spent", ["channel"]
)


SOURCE = "/avis/notify"
# A send handed over with its case by the handler that queued it is attempted with that case
# if this soon after (else its case is read again): the next pass of this copy's sender.
HANDED_FOR = 1.0
ERASED_KEPT = 4096  # the cases whose erasure began here, the latest this many


class ErasedHere:
    """The cases whose erasure this process has begun (the latest `ERASED_KEPT`): their sends
    are attempted with their case as the store has it now, never as a handler had it before."""

    def __init__(self) -> None:
        self._ids: dict[str, None] = {}

    def began(self, case_id: str) -> None:
        """The erasure of the case begins here (before its case is written erased)."""
        self._ids.pop(case_id, None)
        self._ids[case_id] = None
        if len(self._ids) > ERASED_KEPT:
            del self._ids[next(iter(self._ids))]

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._ids


async def record_sent(
    store: Store, locks: AggregateLocks, emitter: Emitter, send: SendDoc, attempt: Attempt
) -> None:
    """Record a send sent; a physician's copy (an email or a FHIR post) also tells, on the
    send's outbox in the same write, that the physician got the report: no identifier of the
    physician, the report's version and the channel."""
    at = attempt.at
    if send.template is not Template.PHYSICIAN_REPORT:
        await store.record_attempt(send.id, attempt, SendStatus.SENT, None, sent_at=at)
        return
    told = PhysicianCopySent(
        case_id=send.case_id,
        report_version=max(1, int(send.params.get("version") or 1)),
        channel="fhir" if send.channel == "fhir" else "email",
        sent_at=at,
    )
    async with locks.hold(emitter.lock(send.id)):
        await emitter.emit(
            "notify.physician.copy_sent",
            told,
            aggregate=send.id,
            trace=send.traceparent,
            write=lambda events: store.record_attempt(
                send.id, attempt, SendStatus.SENT, None, sent_at=at, events=events
            ),
        )


class EmailSender:
    """Sends one queued email per attempt, once: the same Message-ID and Date on every repeat."""

    def __init__(
        self,
        *,
        store: Store,
        keys: CaseKeys,
        locks: AggregateLocks,
        mailer: Mailer,
        settings: Settings,
        emitter: Emitter,
        erased: ErasedHere | None = None,
    ) -> None:
        self.emitter = emitter  # tells that a physician's copy was sent
        self.erased = erased or ErasedHere()
        self.store = store
        self.keys = keys
        self.locks = locks
        self.mailer = mailer
        self.settings = settings
        for template in Template:  # each series at 0 from the start, so `rate()` sees the first
            SEND_ATTEMPTS.labels("email", template.value, Outcome.SENT.value)

    async def waiting(self, item_ids: list[str]) -> dict[str, SendDoc]:
        """The sends still queued, or whose erasure's email is done with while its address is
        still kept (a crash came between its end and its key's destruction); in one read."""
        found: dict[str, SendDoc] = {}
        for send in await self.store.sends_of(item_ids):
            kept = send.status is not SendStatus.QUEUED and await self._notice_kept(send)
            if rules.still_to_work(send.status, send.template, kept):
                found[send.id] = send
        return found

    def due_at(self, item: SendDoc) -> datetime | None:
        """When its next attempt is due."""
        return item.next_at

    def holding(self, item: SendDoc) -> AbstractAsyncContextManager[None]:
        """The send's lock: the erasure of its case waits for an attempt in flight, and an
        attempt after it finds the send cancelled."""
        return self.locks.hold(lock_key("send", item.id))

    async def attempt(self, item: SendDoc) -> datetime | None:
        """Send it once and record the outcome; when to retry, None once sent, given up or
        cancelled (its case erased). The send as this pass read it: only this loop moves a
        queued send on, but an erasure, which cancels it under its lock; the attempt reads its
        case (or takes it as its handler just had it, unless its erasure began here since:
        `_handed`), which the erasure marked erased before that (`_try`), and sends nothing
        then."""
        send = item
        retry_at = None
        if send.status is SendStatus.QUEUED:
            result = await self._send(send)
            if result is None:
                await self.store.cancel_send(send.id)
                log.info("email cancelled: its case was erased or withdrawn", send_id=send.id)
            else:
                retry_at = await self._record(send, result)
        if retry_at is None and rules.outlives_erasure(send.template):
            await self._forget_notice(send)  # done with: sent, given up or cancelled
        return retry_at

    async def _notice_kept(self, send: SendDoc) -> bool:
        """Whether the address an erasure's email went to is still kept on its case."""
        if not rules.outlives_erasure(send.template):
            return False
        case = await self.store.case(send.case_id)
        return case is not None and case.erased_at is not None and case.contact is not None

    async def _forget_notice(self, send: SendDoc) -> None:
        """Destroy the key of the address the erasure's email went to, then drop the address:
        it is gone everywhere, the erasure's event included. A failure leaves both, and the
        send filed: its next pass does this again (a destroyed key is done already)."""
        async with self.locks.hold(lock_key("case", send.case_id)):
            case = await self.store.case(send.case_id)
            if case is None or case.erased_at is None or case.contact is None:
                return
            await self.keys.destroy(key_ref_of(case.contact))
            case.contact, case.updated_at = None, clock.now()
            await self.store.save_case(case)
        log.info("erasure email done with: its address destroyed", send_id=send.id)

    async def _send(self, send: SendDoc) -> Result | None:
        """One attempt, in the case's trace (None: not made, the case is erased, or withdrawn
        for a professional's email)."""
        try:
            return await self._try(send)
        except CaseKeyDestroyed:
            return None

    async def _try(self, send: SendDoc) -> Result | None:
        """One attempt, in the case's trace; the contact is opened here and nowhere else."""
        with case_span("notify.email.send", send.traceparent) as span:
            span.set_attribute("avis.case_id", send.case_id)
            span.set_attribute("avis.notification", send.template.value)
            span.set_attribute("avis.send_id", send.id)
            span.set_attribute("avis.attempt", len(send.attempts) + 1)
            if send.params.get("reference"):
                span.set_attribute("avis.case_reference", send.params["reference"])
            case = self._handed(send) or await self.store.case(send.case_id)
            erased = case is not None and case.erased_at is not None
            withdrawn = case is not None and case.withdrawn
            if not rules.still_sent(send.template, erased=erased, withdrawn=withdrawn):
                return None
            to_physician = send.template is Template.PHYSICIAN_REPORT
            sealed = (case.physician if to_physician else case.contact) if case else None
            if send.recipient is not None:  # a professional: their address is the send's own
                result = await self._to_professional(send, send.recipient)
            elif case is None or sealed is None:
                result = Result(Outcome.PERMANENT, None, "no contact for the case")
            else:
                # The key the address is sealed under: the case's, or an erasure notice's own.
                ring = await self.keys.opening(sealed)
                try:
                    email, params = self._recipient(send, case, sealed, ring)
                except SealingError:
                    result = Result(Outcome.PERMANENT, None, "sealed content cannot be opened")
                else:
                    result = await self._deliver(send, email, params)
            span.set_attribute("avis.send_outcome", result.outcome.value)
            if result.code is not None:
                span.set_attribute("smtp.reply_code", result.code)
            return result

    def _handed(self, send: SendDoc) -> CaseDoc | None:
        """The case as the handler that queued the send had it, just now (`HANDED_FOR`), unless
        its erasure began here since: an erasure at this copy is seen as when the case is read
        inside the send's lock; one at another copy, as before, once it is written (an attempt
        under way there, or this soon after the case was written, may still send)."""
        if send.case_id in self.erased:
            return None
        return send.case_as_queued(HANDED_FOR)

    def _recipient(
        self, send: SendDoc, case: CaseDoc, sealed: Sealed, ring: Keyring
    ) -> tuple[str, dict[str, str]]:
        """The address a send goes to and its parameters, opened here only: the treating
        physician's, with the link that opens the report for them, or the patient's."""
        if send.template is not Template.PHYSICIAN_REPORT:
            contact = ring.open_model(sealed, aad=contact_aad(case.id), model=Recipient)
            return contact.email, self._params(send, case, ring)
        physician = ring.open_model(sealed, aad=physician_aad(case.id), model=PhysicianContact)
        params = dict(send.params)
        url = params.pop("report_url", "")
        if physician.link_secret is not None and url:  # else no link: none would open for them
            pages, secret = self.settings.pages_url, physician.link_secret
            params["report_url"] = rules.physician_page(pages, case.id, secret, send.language)
        return physician.email, params

    async def _to_professional(self, send: SendDoc, sealed: Sealed) -> Result:
        """A professional's email: their address opened here only, the send's parameters."""
        ring = await self.keys.opening(sealed)
        try:
            contact = ring.open_model(sealed, aad=recipient_aad(send.id), model=ProfessionalContact)
        except SealingError:
            return Result(Outcome.PERMANENT, None, "sealed content cannot be opened")
        return await self._deliver(send, contact.email, dict(send.params))

    async def _deliver(self, send: SendDoc, email: str, params: dict[str, str]) -> Result:
        """One attempt: the email (a physician's FHIR document goes by its own queue:
        `fhir.py`)."""
        message = compose(
            template=send.template,
            language=send.language,
            params=params,
            to=email,
            sender=self.settings.mail_from,
            message_id=send.message_id,
            queued_at=send.created_at,
        )
        return await self.mailer.send(message)

    def _params(self, send: SendDoc, case: CaseDoc, ring: Keyring) -> dict[str, str]:
        """The send's parameters, its links to the people's pages; the first email of a case
        its patient must claim links to the claim, its secret opened here (never stored in
        clear): every repeat has the same link."""
        pages = self.settings.pages_url
        params = {**send.params, **rules.page_links(pages, case.id)}
        if case.claim is None or send.template is not Template.CASE_RECEIVED:
            return params
        claim = ring.open_model(case.claim, aad=claim_aad(case.id), model=ClaimSecret)
        return {**params, "case_url": rules.claim_link(pages, case.id, claim.secret)}

    async def _record(self, send: SendDoc, result: Result) -> datetime | None:
        now = clock.now()
        attempt = Attempt(at=now, outcome=result.outcome, code=result.code, reason=result.reason)
        SEND_ATTEMPTS.labels(send.channel, send.template.value, result.outcome.value).inc()
        fields = {"send_id": send.id, "template": send.template.value, "code": result.code}
        if result.outcome is Outcome.SENT:
            await record_sent(self.store, self.locks, self.emitter, send, attempt)
            if send.template is Template.REPORT_READY:  # queued when notify read the report-ready
                stage_reached("report_ready_to_notified", since=send.created_at, at=now)
            log.info("email sent", **fields)
            return None
        failures = 1 + sum(a.outcome is Outcome.TRANSIENT for a in send.attempts)
        retry_at = None
        if result.outcome is Outcome.TRANSIENT:
            spread = rules.POST_JITTER if result.posted else rules.EMAIL_JITTER
            retry_at = rules.send_retry_at(
                failures,
                posted=result.posted,
                first_at=send.attempts[0].at if send.attempts else now,
                now=now,
                schedule=self.settings.retry_schedule,
                backoff=self.settings.webhook_backoff(),
                jitter=random.uniform(*spread),  # noqa: S311
            )
        if retry_at is None:
            if result.outcome is Outcome.TRANSIENT:
                attempt.reason = f"{attempt.reason}; gave up after {failures} attempts"
            await self.store.record_attempt(send.id, attempt, SendStatus.FAILED, None)
            SENDS_FAILED.labels(send.channel).inc()
            log.error("email failed", reason=attempt.reason, **fields)
            return None
        await self.store.record_attempt(send.id, attempt, SendStatus.QUEUED, retry_at)
        log.warning("email retried", retry_at=retry_at.isoformat(), reason=result.reason, **fields)
        return retry_at
