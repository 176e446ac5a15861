"""The notify service: settings -> observability -> broker, database -> store -> service ->
handlers, routes, and the senders that work the queues of emails and webhooks."""

from fastapi import FastAPI

from avis.notify import api, handlers
from avis.notify.service import NotifyService
from avis.notify.settings import Settings
from avis.notify.store import Store
from avis.shared.parking import Parking
from avis.shared.runtime import Runtime, serve
from avis.shared.sealing import Keyring

SENDS: tuple[str, ...] = ()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the notify app over its own store and broker connections."""
    settings = settings or Settings()
    runtime = Runtime(settings, sends=SENDS)
    parking = Parking(runtime.messaging, settings)
    notify = NotifyService(
        store=Store(runtime.db),
        locks=runtime.locks,
        keyring=Keyring.from_settings(settings),
        settings=settings,
        parking=parking,
    )
    handlers.register(runtime, notify)
    runtime.background("parking", lambda: parking.run(notify.expire_parked))
    if settings.sender_enabled:
        runtime.background("sender", notify.run_sender)
        runtime.background("webhooks", notify.run_webhooks)
    app = runtime.create_app(
        "Avis notify",
        [api.router, api.hooks],
        description="The patient's emails at each step of a case, queued and sent once, and "
        "partners' signed webhooks.",
    )
    app.state.notify = notify
    return app


def run() -> None:
    """Serve the notify service (`avis-notify`)."""
    serve(create_app, Settings())


if __name__ == "__main__":
    run()
