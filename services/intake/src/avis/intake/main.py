"""The intake service's composition root: settings -> runtime (observability, broker, store) ->
store, emitter and relay -> service -> handlers and routes."""

from dataclasses import dataclass
from datetime import timedelta

from fastapi import FastAPI

from avis.intake import api, handlers, store
from avis.intake.erasure import Erasures
from avis.intake.service import SOURCE, IntakeService, Limits, Reported
from avis.intake.settings import Settings
from avis.shared.bodies import BodyLimits
from avis.shared.case_keys import CaseKeys
from avis.shared.emit import Emitter
from avis.shared.events import (
    CaseClaimed,
    CaseErased,
    CaseKeyed,
    CaseSubmitted,
    CaseWithdrawn,
    InformationProvided,
)
from avis.shared.runtime import Runtime, serve

# What this service publishes: its AsyncAPI document's `send` operations.
SENDS = (CaseClaimed, CaseErased, CaseKeyed, CaseSubmitted, CaseWithdrawn, InformationProvided)
DESCRIPTION = (
    "A patient, or a partner on the patient's behalf, drafts a case, uploads records and "
    "submits it with consent; the case's status and timeline follow the review and the report."
)


@dataclass(frozen=True)
class Parts:
    """What every copy of intake connects to and writes through, the service and the operators'
    one-off commands alike (`avis-case-keys`)."""

    runtime: Runtime
    store: store.Store
    emitter: Emitter
    keys: CaseKeys


def parts(settings: Settings) -> Parts:
    """Intake's runtime (observability, broker, store), its store, emitter and case keys."""
    # A case's HTTP writes reach any copy, its events one copy: its writers hold it among all.
    runtime = Runtime(settings, sends=SENDS, across_copies=[store.CASES])
    cases = store.Store(runtime.db)
    runtime.on_store(store.init)
    emitter = Emitter(SOURCE, runtime.relay, cases.cases)
    keys = CaseKeys.from_settings(settings)
    runtime.on_stop(keys.close)
    return Parts(runtime, cases, emitter, keys)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the intake app over its own store and broker connections."""
    settings = settings or Settings()
    made = parts(settings)
    runtime, cases = made.runtime, made.store
    intake = IntakeService(
        store=cases,
        locks=runtime.locks,
        emitter=made.emitter,
        keys=made.keys,
        limits=Limits(
            settings.max_document_bytes,
            settings.max_documents_per_case,
            timedelta(days=settings.idempotency_key_days),
        ),
        public_url=settings.public_url,
        reviewer_access=timedelta(days=settings.reviewer_access_days),
    )
    reported = Reported(intake)
    handlers.register(runtime, reported)
    handlers.register_follow_ups(runtime, reported)
    runtime.anchor(cases.trail)
    runtime.purge(cases.calendar)
    upload = settings.max_document_bytes + api.MULTIPART_SLACK
    limits = BodyLimits(settings.max_json_bytes, {api.router.prefix + api.DOCUMENTS_PATH: upload})
    app = runtime.create_app(
        "Avis intake", [api.router], description=DESCRIPTION, body_limits=limits
    )
    app.state.intake = intake
    app.state.erasures = Erasures(intake)
    app.state.reported = reported
    return app


def run() -> None:
    """Serve the intake service (`avis-intake`)."""
    serve(create_app, Settings())


if __name__ == "__main__":
    run()
