"""The FHIR poster: the channel of the due-queue of sends posted to a physician's institution.
Where the institution has a FHIR endpoint (AVIS_NOTIFY_PHYSICIAN_FHIR_ENDPOINTS), the
physician's copy of the report is its FHIR document, read through the physician's own link and
posted there instead of an email, under the webhooks' rules, from the same settings: the webhook
client (its URL and address checks, its deadline), their retry backoff and window, their cap on
posts at once in all and per destination (`webhook_concurrency`, `webhook_per_subscription`:
here, per institution), and the disabling of the endpoint after `webhook_disable_after_failures`
failed posts in a row, or at once on 410 Gone (then its sends wait, until a coordinator enables
it again or its URL is set anew; looked at again every `fhir_disabled_recheck_seconds`). Its
queue is its own, so a slow endpoint never holds the emails. Its log lines say "fhir post"; they
carry the send's id, codes and reasons, never the link, the document or a person."""

import random
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta

import httpx
import structlog

from avis.notify import rules
from avis.notify.mailer import Result
from avis.notify.models import Outcome, SendStatus, Template
from avis.notify.queue import Pool
from avis.notify.sender import SEND_ATTEMPTS, SENDS_FAILED, record_sent
from avis.notify.settings import Settings
from avis.notify.store import Attempt, EndpointDoc, SendDoc, Store, physician_aad
from avis.notify.webhooks import WebhookClient
from avis.shared import clock
from avis.shared.case_keys import CaseKeyDestroyed, CaseKeys
from avis.shared.emit import Emitter
from avis.shared.events import PhysicianContact
from avis.shared.mongo import AggregateLocks, lock_key
from avis.shared.observability import case_span
from avis.shared.sealing import SealingError

log = structlog.get_logger("avis.notify")

FHIR_MEDIA_TYPE = "application/fhir+json"
CHANNEL = "fhir"


class Waits(Exception):
    """The send's endpoint is disabled: the send waits for it, posting nothing."""

    def __init__(self, institution: str, url: str) -> None:
        super().__init__(institution)
        self.institution, self.url = institution, url


class FhirPoster:
    """Posts one queued physician's copy per attempt, with the same `webhook-id` every time."""

    def __init__(
        self,
        *,
        store: Store,
        keys: CaseKeys,
        locks: AggregateLocks,
        client: WebhookClient,
        settings: Settings,
        emitter: Emitter,
    ) -> None:
        self.emitter = emitter  # tells that the physician's copy was sent
        self.store = store
        self.keys = keys
        self.locks = locks
        self.client = client
        self.settings = settings
        # Its series at 0 from the start, as the emails'.
        SEND_ATTEMPTS.labels(CHANNEL, Template.PHYSICIAN_REPORT.value, Outcome.SENT.value)
        SENDS_FAILED.labels(CHANNEL)

    def pool(self) -> Pool[SendDoc]:
        """Posts in flight at once: the webhooks' number in all, and per institution as many
        as to one subscription."""
        return Pool(
            self.settings.webhook_concurrency,
            [(lambda send: send.institution or send.id, self.settings.webhook_per_subscription)],
        )

    async def waiting(self, item_ids: list[str]) -> dict[str, SendDoc]:
        """The sends still queued, in one read."""
        return {
            s.id: s for s in await self.store.sends_of(item_ids) if s.status is SendStatus.QUEUED
        }

    def due_at(self, item: SendDoc) -> datetime | None:
        """When its next attempt is due."""
        return item.next_at

    def holding(self, item: SendDoc) -> AbstractAsyncContextManager[None]:
        """The send's lock, as an email's: the erasure of its case waits for a post in flight."""
        return self.locks.hold(lock_key("send", item.id))

    async def attempt(self, item: SendDoc) -> datetime | None:
        """Post it once and record the outcome; when to retry, None once sent, given up or
        cancelled (its case erased or withdrawn)."""
        if item.status is not SendStatus.QUEUED:
            return None
        try:
            result = await self._try(item)
        except CaseKeyDestroyed:
            result = None
        except Waits as off:
            return await self._wait(item, off.institution, off.url)
        if result is None:
            await self.store.cancel_send(item.id)
            log.info("fhir post cancelled: its case was erased or withdrawn", send_id=item.id)
            return None
        return await self._record(item, result)

    async def _try(self, send: SendDoc) -> Result | None:
        """One attempt, in the case's trace; the physician's link is opened here and nowhere
        else, and goes nowhere but to the reports service."""
        with case_span("notify.fhir.post", send.traceparent) as span:
            span.set_attribute("avis.case_id", send.case_id)
            span.set_attribute("avis.send_id", send.id)
            span.set_attribute("avis.attempt", len(send.attempts) + 1)
            case = await self.store.case(send.case_id)
            erased = case is not None and case.erased_at is not None
            withdrawn = case is not None and case.withdrawn
            if not rules.still_sent(send.template, erased=erased, withdrawn=withdrawn):
                return None
            institution = send.institution
            url = rules.fhir_endpoint(self.settings.physician_fhir_endpoints, institution)
            if case is None or case.physician is None:
                result = Result(Outcome.PERMANENT, None, "no physician for the case", posted=True)
            elif institution is None or url is None:
                why = "the institution has no FHIR endpoint any more"
                result = Result(Outcome.PERMANENT, None, why, posted=True)
            elif await self._disabled(institution, url):
                span.set_attribute("avis.send_outcome", "waiting")
                raise Waits(institution, url)
            else:
                ring = await self.keys.opening(case.physician)
                try:
                    physician = ring.open_model(
                        case.physician, aad=physician_aad(case.id), model=PhysicianContact
                    )
                except SealingError:
                    why = "sealed content cannot be opened"
                    result = Result(Outcome.PERMANENT, None, why, posted=True)
                else:
                    link = send.params.get("report_url") or ""
                    if physician.link_secret is None or not link:
                        why = "no link to the report"
                        result = Result(Outcome.PERMANENT, None, why, posted=True)
                    else:
                        link = rules.physician_link(link, case.id, physician.link_secret)
                        result = await self._post(send, link, institution, url)
            span.set_attribute("avis.send_outcome", result.outcome.value)
            if result.code is not None:
                span.set_attribute("http.response.status_code", result.code)
            return result

    async def _disabled(self, institution: str, url: str) -> bool:
        """Whether the institution's endpoint takes no post now."""
        state = await self.store.endpoint(institution)
        if state is None or state.enabled:
            return False
        return rules.endpoint_state_holds(url, state.url)

    async def _wait(self, send: SendDoc, institution: str, url: str) -> datetime:
        """Leave the send waiting on its disabled endpoint, listed there so that re-enabling
        it resumes the send at once; re-enabled meanwhile, it goes now."""
        now = clock.now()
        async with self.locks.hold(lock_key("fhir-endpoint", institution)):
            state = await self.store.endpoint(institution)
            if state is None or not rules.endpoint_state_holds(url, state.url) or state.enabled:
                return now
            if send.id not in state.waiting:
                state.waiting.append(send.id)
                await self.store.save_endpoint(state)
        until = now + timedelta(seconds=self.settings.fhir_disabled_recheck_seconds)
        await self.store.wait_send(send.id, until)
        log.info("fhir post waits: its endpoint is disabled", send_id=send.id)
        return until

    async def _post(self, send: SendDoc, link: str, institution: str, url: str) -> Result:
        """The report's FHIR document, read through the link, posted to the endpoint with the
        webhooks' client; the id of the send rides along so the endpoint can deduplicate. Only
        the endpoint's own answers count towards disabling it."""
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
            try:
                fetched = await http.get(link, headers={"Accept": FHIR_MEDIA_TYPE})
            except httpx.HTTPError as exc:
                why = f"report not read: {type(exc).__name__}"
                return Result(Outcome.TRANSIENT, None, why, posted=True)
        if fetched.status_code != 200:
            # 410: the link expired or the case was erased; no retry brings the report back.
            gone = Outcome.PERMANENT if fetched.status_code == 410 else Outcome.TRANSIENT
            return Result(gone, None, f"report not read: {fetched.status_code}", posted=True)
        if not fetched.headers.get("content-type", "").startswith(FHIR_MEDIA_TYPE):
            why = "report not read: not a FHIR document"
            return Result(Outcome.TRANSIENT, None, why, posted=True)
        headers = {"webhook-id": send.message_id.strip("<>")}
        answer = await self.client.post(url, fetched.text, headers)
        await self._endpoint_result(institution, url, answer.outcome, answer.reason)
        return Result(answer.outcome, answer.code, f"FHIR endpoint: {answer.reason}", posted=True)

    async def _endpoint_result(
        self, institution: str, url: str, outcome: Outcome, why: str
    ) -> None:
        """Count the endpoint's failures in a row, as a subscription's; disable it when they
        are too many, or at once when it answered 410 Gone."""
        async with self.locks.hold(lock_key("fhir-endpoint", institution)):
            state = await self.store.endpoint(institution)
            if state is None or state.url != url:
                state = EndpointDoc(id=institution, url=url)
            if outcome is Outcome.SENT:
                if state.consecutive_failures == 0 and state.updated_at is not None:
                    return
                state.consecutive_failures = 0
            else:
                state.consecutive_failures += 1
                threshold = self.settings.webhook_disable_after_failures
                now_off = outcome is Outcome.PERMANENT
                if state.enabled and (
                    now_off or rules.should_disable(state.consecutive_failures, threshold)
                ):
                    state.enabled, state.disabled_at = False, clock.now()
                    state.disabled_reason = (
                        f"the endpoint answered {why}"
                        if now_off
                        else f"{state.consecutive_failures} failed posts in a row (last: {why})"
                    )
                    log.warning("fhir endpoint disabled", institution=institution)
            state.updated_at = clock.now()
            await self.store.save_endpoint(state)

    async def _record(self, send: SendDoc, result: Result) -> datetime | None:
        now = clock.now()
        attempt = Attempt(at=now, outcome=result.outcome, code=result.code, reason=result.reason)
        SEND_ATTEMPTS.labels(CHANNEL, send.template.value, result.outcome.value).inc()
        fields = {"send_id": send.id, "code": result.code}
        if result.outcome is Outcome.SENT:
            await record_sent(self.store, self.locks, self.emitter, send, attempt)
            log.info("fhir post sent", **fields)
            return None
        failures = 1 + sum(a.outcome is Outcome.TRANSIENT for a in send.attempts)
        retry_at = None
        if result.outcome is Outcome.TRANSIENT:
            retry_at = rules.send_retry_at(
                failures,
                posted=True,
                first_at=send.attempts[0].at if send.attempts else now,
                now=now,
                schedule=self.settings.retry_schedule,
                backoff=self.settings.webhook_backoff(),
                jitter=random.uniform(*rules.POST_JITTER),  # noqa: S311
            )
        if retry_at is None:
            if result.outcome is Outcome.TRANSIENT:
                attempt.reason = f"{attempt.reason}; gave up after {failures} attempts"
            await self.store.record_attempt(send.id, attempt, SendStatus.FAILED, None)
            SENDS_FAILED.labels(CHANNEL).inc()
            log.error("fhir post failed", reason=attempt.reason, **fields)
            return None
        await self.store.record_attempt(send.id, attempt, SendStatus.QUEUED, retry_at)
        log.warning(
            "fhir post retried", retry_at=retry_at.isoformat(), reason=result.reason, **fields
        )
        return retry_at
