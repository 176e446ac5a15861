"""The review service: settings -> observability -> broker, database -> routes."""

import uvicorn
from fastapi import FastAPI

from avis.review import api, handlers, store
from avis.review.settings import Settings
from avis.shared import topics
from avis.shared.runtime import Runtime

SENDS: tuple[str, ...] = (topics.REVIEW_ASSIGNED, topics.REVIEW_COMPLETED)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the review app over its own store and broker connections."""
    settings = settings or Settings()
    runtime = Runtime(settings, sends=SENDS)
    runtime.on_store(store.init)
    handlers.register(runtime)
    return runtime.create_app("Avis review", [api.router])


def run() -> None:
    """Serve the review service (`avis-review`)."""
    settings = Settings()
    uvicorn.run(
        create_app(settings), host=settings.http_host, port=settings.http_port, log_level="warning"
    )


if __name__ == "__main__":
    run()
