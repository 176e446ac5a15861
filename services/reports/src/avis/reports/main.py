"""The reports service: settings -> observability -> broker, database -> store, emitter and
relay -> service -> handlers, routes, the background renderer."""

from datetime import timedelta

from fastapi import FastAPI

from avis.reports import api, handlers, store
from avis.reports.addenda import Addenda
from avis.reports.keying import CaseKeying
from avis.reports.rules import AccessWindows
from avis.reports.service import SOURCE, CaseErasure, ReportsService
from avis.reports.settings import Settings
from avis.shared.case_keys import CaseKeys
from avis.shared.emit import Emitter
from avis.shared.events import ReportReady
from avis.shared.parking import Parking
from avis.shared.runtime import Runtime, serve

# What this service publishes: its AsyncAPI document's `send` operations.
SENDS = (ReportReady,)
DESCRIPTION = (
    "The medical feedback report of a case, composed in the patient's language (fr or en) from "
    "each version of the specialist's opinion, and served as JSON, PDF or an HL7 FHIR R4B "
    "document. Readers: the patient who filed the case, the partner that filed it (with the "
    "patient's consent to share), the specialist who wrote the opinion, coordinators."
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the reports app over its own store and broker connections."""
    settings = settings or Settings()
    runtime = Runtime(settings, sends=SENDS)
    reports_store = store.Store(runtime.db)
    parking = Parking(runtime.messaging, settings)
    reports = ReportsService(
        store=reports_store,
        locks=runtime.locks,
        emitter=Emitter(SOURCE, runtime.relay, reports_store.cases),
        keys=CaseKeys.from_settings(settings),
        public_url=settings.public_url,
        render_in_background=settings.render_in_background,
        parking=parking,
        windows=AccessWindows(
            reviewer=timedelta(days=settings.reviewer_access_days),
            physician_link=timedelta(days=settings.physician_link_days),
        ),
    )
    runtime.on_stop(reports.keys.close)
    runtime.on_store(store.init)
    runtime.background("render", reports.render_queued)
    runtime.singleton(
        "parking",
        lambda lease: parking.run(
            lambda case_id, give_up: reports.expire_parked(case_id=case_id, give_up=give_up),
            lease.check,
        ),
    )
    keying = CaseKeying(
        store=reports_store, locks=runtime.locks, emitter=reports.emitter, keys=reports.keys
    )
    handlers.register(runtime, reports, CaseErasure(reports), keying)
    handlers.register_addenda(runtime, Addenda(reports))
    runtime.anchor(reports_store.trail)
    app = runtime.create_app("Avis reports", [api.router], description=DESCRIPTION)
    app.state.reports = reports
    return app


def run() -> None:
    """Serve the reports service (`avis-reports`)."""
    serve(create_app, Settings())


if __name__ == "__main__":
    run()
