"""The reports service: settings -> observability -> broker, database -> routes."""

from fastapi import FastAPI

from avis.reports import api, handlers
from avis.reports.settings import Settings
from avis.shared import topics
from avis.shared.runtime import Runtime, serve

SENDS: tuple[str, ...] = (topics.REPORT_READY,)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the reports app over its own store and broker connections."""
    settings = settings or Settings()
    runtime = Runtime(settings, sends=SENDS)
    handlers.register(runtime)
    return runtime.create_app("Avis reports", [api.router])


def run() -> None:
    """Serve the reports service (`avis-reports`)."""
    serve(create_app, Settings())


if __name__ == "__main__":
    run()
