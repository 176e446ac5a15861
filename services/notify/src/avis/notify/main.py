"""The notify service: settings -> observability -> broker, database -> store -> the mailer and
the webhook client -> the email sender, the webhook worker and the FHIR poster, each over its
due-queue -> the use cases -> handlers, routes, and the loops that work the queues."""

from fastapi import FastAPI

from avis.notify import api, handlers
from avis.notify.fhir import FhirPoster
from avis.notify.fhir_endpoints import FhirEndpoints
from avis.notify.keying import CaseKeying
from avis.notify.mailer import Mailer, SmtpTarget
from avis.notify.professionals import ProfessionalEmails
from avis.notify.queue import DueQueue
from avis.notify.sender import SOURCE, EmailSender, ErasedHere
from avis.notify.service import CaseErasure, NotifyService
from avis.notify.settings import Settings
from avis.notify.store import SendDoc, Store
from avis.notify.webhooks import WebhookClient
from avis.notify.worker import WebhookWorker
from avis.shared.case_keys import CaseKeys
from avis.shared.emit import Emitter
from avis.shared.events import PhysicianCopySent
from avis.shared.parking import Parking
from avis.shared.runtime import Runtime, serve

# A physician's copy sent: on the send's outbox, published by the relay (sender.record_sent).
SENDS = (PhysicianCopySent,)
CASE = "case"  # the kind of a case's lock (`lock_key("case", id)`)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the notify app over its own store and broker connections."""
    settings = settings or Settings()
    # A case's writers (its events, at the copy that owns its partition or, during a rebalance,
    # at the former owner still finishing one; a professional's email; the sender's erasure
    # notice) hold it among the copies: each writes the whole case it read (docs/replicas.md).
    # Held once per event of a case, and seldom waited for at another copy (a rebalance, an
    # erasure's email at the sender's copy): their entries deleted together once a second.
    runtime = Runtime(settings, sends=SENDS, across_copies=[CASE], sections_swept_every=1.0)
    parking = Parking(runtime.messaging, settings)
    store = Store(runtime.db, settings.retention())
    keys = CaseKeys.from_settings(settings)
    runtime.on_stop(keys.close)
    emitter = Emitter(SOURCE, runtime.relay, store.sends)
    client = WebhookClient(
        allow_http_loopback=settings.webhook_allow_http_loopback,
        timeout=settings.webhook_timeout_seconds,
        connect_timeout=settings.webhook_connect_timeout_seconds,
        deadline=settings.webhook_attempt_deadline_seconds,
    )
    erased = ErasedHere()  # the sender's and the erasure's: cases whose erasure began here
    sender = _email_sender(runtime, store, keys, settings, emitter, erased)
    worker = WebhookWorker(
        store=store, locks=runtime.locks, keyring=keys.keyring, client=client, settings=settings
    )
    # Copies share the queues: any copy files through hand-offs, the lease holder works each.
    emails = DueQueue(name="email", store=store, channel=sender, settings=settings, handoff=True)
    deliveries = DueQueue(
        name="webhook",
        store=store,
        channel=worker,
        settings=settings,
        pool=worker.pool(),
        handoff=True,
    )
    posts = _fhir_posts(runtime, store, keys, client, settings, emitter)
    notify = NotifyService(
        store=store,
        locks=runtime.locks,
        keys=keys,
        settings=settings,
        parking=parking,
        webhooks=client,
        email_queue=emails,
        webhook_queue=deliveries,
        fhir_queue=posts,
        erased=erased,
    )
    keying = CaseKeying(store=store, locks=runtime.locks, keys=keys)
    professionals = ProfessionalEmails(
        store=store, locks=runtime.locks, keys=keys, settings=settings, email_queue=emails
    )
    handlers.register(runtime, notify, CaseErasure(notify), keying, professionals)
    runtime.singleton("parking", lambda lease: parking.run(notify.expire_parked, lease.check))
    runtime.purge(store.calendar)
    if settings.sender_enabled:
        # Each queue on one copy at a time: the holder of its lease (queue.py says why).
        runtime.singleton("email", emails.run)
        runtime.singleton("webhook", deliveries.run)
        runtime.singleton("fhir", posts.run)
    app = runtime.create_app(
        "Avis notify",
        [api.router, api.hooks, api.endpoints],
        description="The patient's emails at each step of a case, queued and sent once, and "
        "partners' signed webhooks.",
    )
    app.state.notify = notify
    app.state.fhir_endpoints = FhirEndpoints(
        store=store, locks=runtime.locks, settings=settings, fhir_queue=posts
    )
    app.state.sender = sender
    return app


def _email_sender(
    runtime: Runtime,
    store: Store,
    keys: CaseKeys,
    settings: Settings,
    emitter: Emitter,
    erased: ErasedHere,
) -> EmailSender:
    """The email queue's worker, over a mailer whose kept SMTP connections are closed when
    the service stops (once the queues have stopped)."""
    mailer = Mailer(SmtpTarget.from_settings(settings))
    runtime.on_stop(mailer.close)
    return EmailSender(
        erased=erased,
        store=store,
        keys=keys,
        locks=runtime.locks,
        mailer=mailer,
        settings=settings,
        emitter=emitter,
    )


def _fhir_posts(
    runtime: Runtime,
    store: Store,
    keys: CaseKeys,
    client: WebhookClient,
    settings: Settings,
    emitter: Emitter,
) -> DueQueue[SendDoc]:
    """The queue of the physicians' copies posted to their institution, and its worker: the
    webhooks' client, limits and rules (fhir.py)."""
    poster = FhirPoster(
        store=store,
        keys=keys,
        locks=runtime.locks,
        client=client,
        settings=settings,
        emitter=emitter,
    )
    return DueQueue(
        name="fhir",
        store=store,
        channel=poster,
        settings=settings,
        pool=poster.pool(),
        handoff=True,
    )


def run() -> None:
    """Serve the notify service (`avis-notify`)."""
    serve(create_app, Settings())


if __name__ == "__main__":
    run()
