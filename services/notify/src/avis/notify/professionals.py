"""The professionals' emails: a specialist told that a follow-up question waits for them, a
second reader that a reading waits, the first specialist that the second reader's comments
came back (a translator, later, the same way: a `ProfessionalContact` in their own event).

Notify reads no other service's store: the address comes sealed in the event that gives the
work, and is kept sealed under the case key with the one send it causes. The email holds what
waits and a link to the page in web where the person does it, in the first of their languages
notify has words for; no health data. One email per event: its id comes from the event."""

from __future__ import annotations

import structlog

from avis.notify import emails, rules
from avis.notify.models import SendStatus
from avis.notify.queue import DueQueue
from avis.notify.service import SENDS_QUEUED
from avis.notify.settings import Settings
from avis.notify.store import SendDoc, Store, recipient_aad
from avis.shared import clock
from avis.shared.case_keys import CaseKeys
from avis.shared.envelope import Event, PoisonMessage
from avis.shared.events import Payload, ProfessionalContact
from avis.shared.mongo import AggregateLocks, lock_key
from avis.shared.sealing import SealingError

log = structlog.get_logger("avis.notify")

TO = "professional"  # the channel part of their send's id: `professional:<event id>`


class ProfessionalEmails:
    """Queue the email of an event that gives a professional work."""

    def __init__(
        self,
        *,
        store: Store,
        locks: AggregateLocks,
        keys: CaseKeys,
        settings: Settings,
        email_queue: DueQueue[SendDoc],
    ) -> None:
        self.store = store
        self.locks = locks
        self.keys = keys
        self.settings = settings
        self.email_queue = email_queue

    async def work_waits(self, *, event: Event, payload: Payload) -> None:
        """Queue the professional's email, once (none for an erased case, or without an
        address in the event)."""
        work = rules.professional_work(payload, self.settings.pages_url)
        if work is None:
            return
        async with self.locks.hold(lock_key("case", payload.case_id)):
            case = await self.store.case(payload.case_id)
            if case is not None and case.erased_at is not None:
                return
            ring = await self.keys.opening(work.recipient)
            try:
                contact = ring.open_model(work.recipient, aad=event.id, model=ProfessionalContact)
            except SealingError as exc:
                raise PoisonMessage(f"sealed content cannot be opened: {exc}") from None
            send_id = rules.send_id(event.id, TO)
            now = clock.now()
            send = SendDoc(
                id=send_id,
                case_id=payload.case_id,
                event_id=event.id,
                template=work.template,
                language=rules.professional_language(contact.languages, emails.CATALOGUED),
                params={"reference": (case.reference or "") if case else "", "work_url": work.link},
                message_id=rules.message_id(f"{event.id}.{TO}", self.settings.mail_domain),
                traceparent=event.traceparent,
                created_at=now,
                next_at=now,
                recipient=ring.seal_json(contact, aad=recipient_aad(send_id)),
            )
            found = send if await self.store.queue(send) else await self.store.send(send_id)
            if found is not None and found.status is SendStatus.QUEUED:
                await self.email_queue.file(found.id, found.next_at or now)
                SENDS_QUEUED.labels(found.channel, work.template.value).inc()
                log.info("email queued", template=work.template.value, send_id=found.id)
            if case is not None and send_id not in case.notifications:
                # So the case's erasure cancels it with the others.
                case.notifications.append(send_id)
                case.updated_at = now
                await self.store.save_case(case)
        self.email_queue.wake()
