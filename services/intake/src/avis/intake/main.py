"""The intake service: settings -> observability -> broker, database -> routes."""

from fastapi import FastAPI

from avis.intake import api, handlers, store
from avis.intake.service import IntakeService
from avis.intake.settings import Settings
from avis.shared import topics
from avis.shared.runtime import Runtime, serve

SENDS: tuple[str, ...] = (topics.CASE_SUBMITTED,)
DESCRIPTION = (
    "A patient, or a partner on the patient's behalf, drafts a case, uploads records and "
    "submits it with consent; the case's status and timeline follow the review and the report."
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the intake app over its own store and broker connections."""
    settings = settings or Settings()
    runtime = Runtime(settings, sends=SENDS)
    intake = IntakeService(runtime, settings)
    runtime.on_store(store.init)
    runtime.relay.watch(intake.store.cases)
    handlers.register(runtime, intake)
    app = runtime.create_app("Avis intake", [api.router], description=DESCRIPTION)
    app.state.intake = intake
    app.add_middleware(
        api.HttpGuard,
        max_document_bytes=settings.max_document_bytes,
        max_json_bytes=settings.max_json_bytes,
    )
    return app


def run() -> None:
    """Serve the intake service (`avis-intake`)."""
    serve(create_app, Settings())


if __name__ == "__main__":
    run()
